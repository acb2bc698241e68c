"""The backup-account session in the synthesized control stack: its state machine (cleanup as Catch and
finally), its worker (control account, the only one that deletes), schedules, and the repository settings
that reach the templates and the policies the handlers read."""

from __future__ import annotations

import json

from tests.e2e.configs import E2E_CONFIG
from tests.infra.conftest import definition_of, deployed_policies, flatten, resources_of, state_machine


def _states(control_template) -> dict:
    return definition_of(state_machine(control_template, "MaintenanceStateMachine"))["States"]


def test_cleanup_runs_on_every_path_and_failures_are_reported(control_template):
    states = _states(control_template)
    start, check = states["Start maintenance worker"], states["Check maintenance worker"]
    for task in (start, check):
        assert task["Catch"][0]["ErrorEquals"] == ["States.ALL"]
        assert task["Catch"][0]["Next"] == "Clean up maintenance worker"
        assert task["Catch"][0]["ResultPath"] == "$.error"
    assert start["Next"] == "Check maintenance worker"
    done = states["Maintenance worker done?"]
    assert done["Choices"][0]["Next"] == "Clean up maintenance worker"
    assert done["Default"] == "Wait for maintenance worker"
    assert states["Wait for maintenance worker"]["SecondsPath"] == "$.worker.wait_seconds"
    cleanup = states["Clean up maintenance worker"]
    assert cleanup["Next"] == "Maintenance report" and cleanup["Catch"][0]["Next"] == "Maintenance report"
    assert states["Maintenance report"]["Next"] == "Maintenance failed?"
    assert states["Maintenance session failed"]["Error"] == "MaintenanceSessionFailed"


def test_maintenance_worker_runs_in_the_control_account_with_delete_rights_on_repositories_only(control_template):
    clusters = {c["Properties"]["ClusterName"] for c in resources_of(control_template, "AWS::ECS::Cluster").values()}
    assert "rdsbackup-maintenance" in clusters
    roles = {logical: r for logical, r in resources_of(control_template, "AWS::IAM::Role").items()
             if r["Properties"].get("RoleName") == "rdsbackup-maintenance-worker"}
    (role_id,) = roles
    statements = [s for logical, p in resources_of(control_template, "AWS::IAM::Policy").items()
                  if any(flatten(r) == f"<{role_id}>" for r in p["Properties"]["Roles"])
                  for s in p["Properties"]["PolicyDocument"]["Statement"]]
    deletes = [s for s in statements if "s3:DeleteObject" in s["Action"]]
    assert deletes and all("RepositoriesRepository" in flatten(s["Resource"]) for s in deletes)
    assert not any("rds:" in json.dumps(s["Action"]) or "secretsmanager:" in json.dumps(s["Action"])
                   for s in statements)


def test_schedules_and_policies_carry_the_archive_settings(control_template, cdk_out):
    schedules = {s["Properties"]["Name"]: s["Properties"]
                 for s in resources_of(control_template, "AWS::Scheduler::Schedule").values()}
    images = schedules["rdsbackup-images-maintenance"]
    assert images["ScheduleExpression"] == "cron(0 6 * * ? *)" and json.loads(images["Target"]["Input"]) == {
        "policy": "images"}
    assert "MaintenanceStateMachine" in flatten(images["Target"]["Arn"])
    policies = deployed_policies(cdk_out, control_template)
    maintenance = policies["images"]["maintenance"]
    config = next(p for p in E2E_CONFIG["policies"] if p["name"] == "images")
    assert maintenance["archive"]["after_days"] == config["archive"]["after_days"]
    assert maintenance["archive"]["storage_class"] == "DEEP_ARCHIVE"
    assert maintenance["archive"]["gfs"]["monthly"] == 12
    assert maintenance["archive"]["repository"].startswith("s3://rdsbackup-cold-")
    # retention_min_days 0 in the e2e config (sessions there run seconds apart)
    assert maintenance["retention"] == {"keep_last": 3, "keep_days": None, "min_age_seconds": 0}
    assert maintenance["worker"]["timeout_seconds"] == 120
    assert policies["nightly"]["maintenance"] is None  # snapshots only: nothing to maintain
