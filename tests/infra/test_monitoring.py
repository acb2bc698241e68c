"""Monitoring in the control stack: the hourly RPO check, an alarm per policy, the dashboard."""

import json

from infra.config import parse_config
from tests.e2e.configs import CONTROL_ACCOUNT, E2E_CONFIG, REGION
from tests.infra.conftest import flatten, resources_of

POLICIES = parse_config(E2E_CONFIG, default_account=CONTROL_ACCOUNT, default_region=REGION).policies


def _logical_id_of_function(template, handler: str) -> str:
    return next(logical for logical, fn in resources_of(template, "AWS::Lambda::Function").items()
                if fn["Properties"]["Handler"] == f"rdsbackup_lambdas.handlers.{handler}.handler")


def _statements_of(template, handler: str) -> list[dict]:
    """Every IAM statement attached to the role of the function running `handler`."""
    function = _logical_id_of_function(template, handler)
    role = flatten(template["Resources"][function]["Properties"]["Role"]).strip("<>").split(".")[0]
    return [s for p in resources_of(template, "AWS::IAM::Policy").values()
            if any(flatten(r) == f"<{role}>" for r in p["Properties"]["Roles"])
            for s in p["Properties"]["PolicyDocument"]["Statement"]]


def _actions_of(statements: list[dict]) -> set[str]:
    return {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}


def test_rpo_check_runs_every_hour(control_template):
    function = _logical_id_of_function(control_template, "check_rpo")
    rules = [r["Properties"] for r in resources_of(control_template, "AWS::Events::Rule").values()
             if any(flatten(t["Arn"]) == f"<{function}.Arn>" for t in r["Properties"]["Targets"])]
    assert [r["ScheduleExpression"] for r in rules] == ["rate(1 hour)"]


def test_one_rpo_alarm_per_policy_notifies_and_treats_missing_data_as_breaching(control_template):
    alarms = {a["Properties"]["AlarmName"]: a["Properties"]
              for a in resources_of(control_template, "AWS::CloudWatch::Alarm").values()}
    assert {name for name in alarms if name.startswith("rdsbackup-rpo-")} == {f"rdsbackup-rpo-{p.name}"
                                                                               for p in POLICIES}
    (topic,) = resources_of(control_template, "AWS::SNS::Topic")
    for policy in POLICIES:
        alarm = alarms[f"rdsbackup-rpo-{policy.name}"]
        assert alarm["MetricName"] == "SourcesOutsideRpo" and alarm["Namespace"] == "rdsbackup"
        assert alarm["Dimensions"] == [{"Name": "Policy", "Value": policy.name}]
        assert alarm["Threshold"] == 1 and alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        assert alarm["TreatMissingData"] == "breaching"
        assert [flatten(action) for action in alarm["AlarmActions"]] == [f"<{topic}>"]
        assert f"({policy.rpo_seconds / 3600:g} h)" in alarm["AlarmDescription"]


def test_rpo_check_reads_only_what_it_needs(control_template):
    statements = _statements_of(control_template, "check_rpo")
    actions = _actions_of(statements)
    assert "dynamodb:BatchGetItem" in actions and "sns:Publish" in actions
    assert not {"dynamodb:Scan", "dynamodb:PutItem", "dynamodb:DeleteItem"} & actions
    [metric] = [s for s in statements if s["Action"] == "cloudwatch:PutMetricData"]
    assert metric["Condition"] == {"StringEquals": {"cloudwatch:namespace": "rdsbackup"}}


def test_session_report_may_batch_its_freshness_records(control_template):
    """The report writes each source's last success 25 to a BatchWriteItem (backup_freshness): without the
    action AWS refuses the call and the RPO check raises false alarms (moto does not check IAM)."""
    actions = _actions_of(_statements_of(control_template, "session_report"))
    assert {"dynamodb:BatchWriteItem", "dynamodb:PutItem"} <= actions
    assert not {"dynamodb:Scan", "dynamodb:DeleteItem", "dynamodb:UpdateItem"} & actions


def test_dashboard_shows_sessions_bytes_durations_restore_tests_and_rpo(control_template):
    (dashboard,) = resources_of(control_template, "AWS::CloudWatch::Dashboard").values()
    body = json.loads(flatten(dashboard["Properties"]["DashboardBody"]))
    titles = [w["properties"].get("title") for w in body["widgets"]]
    for title in ("Sessions by status", "Failed resources", "Bytes per day", "Backup duration per resource (s)",
                  "Restore tests", "Sources outside their RPO", "RPO alarms"):
        assert title in titles
    shown = {m[1] for w in body["widgets"] for m in w["properties"].get("metrics", [])}
    assert {"SessionsSuccess", "SessionsFailed", "Failures", "BytesBackedUp", "BytesAdded", "DurationSeconds",
            "RestoreTestPassed", "RestoreTestFailed", "TimeToRestoreSeconds", "SourcesOutsideRpo"} <= shown
