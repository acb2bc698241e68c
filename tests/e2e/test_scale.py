"""Limits that only show at scale: state payloads, shared slots across sessions, the manual-snapshot quota.

Before the session was split into one execution per resource, a session of about 145 snapshot-only
resources failed outright: the session report's output carried every item and result past Step
Functions' 256 KiB (`States.DataLimitExceeded`, which no Catch catches). The 300-resource test below, run on
that design (commit 9fe2a2f, its `fleet` policy at the then maximum concurrency of 40) fails so: the
session FAILED with `States.DataLimitExceeded` ("The state/task 'Back up each resource' returned a result
with a size exceeding the maximum number of bytes service limit"), after 12,616 history events and a
largest recorded state payload of 174 KiB (the Map's result itself, over 256 KiB, is never recorded).
"""

from __future__ import annotations

import json
import threading

import boto3
import pytest
from rdsbackup_lambdas import slots

from rdsbackup_local import moto_patches
from rdsbackup_local.moto_speed import fast_harness
from tests.e2e import faults
from tests.e2e.configs import CONTROL_ACCOUNT, E2E_CONFIG, REGION
from tests.e2e.conftest import report_of, summary_of
from tests.e2e.fixtures import create_instance, db_snapshots

pytestmark = pytest.mark.slow
PAYLOAD_BUDGET = 64 * 1024  # a quarter of Step Functions' 256 KiB


@pytest.fixture(autouse=True)
def _fast_harness():
    """moto's interpreter without its harness-only costs (rdsbackup_local.moto_speed): 300 resources
    are 300 executions, each parsed, started and polled by moto."""
    with fast_harness():
        yield


def largest_payload(events: list[dict]) -> int:
    """The largest state input or output an execution's history shows."""
    sizes = [0]
    for event in events:
        for details in event.values():
            if isinstance(details, dict):
                sizes += [len(details[key]) for key in ("input", "output") if isinstance(details.get(key), str)]
    return max(sizes)


def raise_creation_slots(account: str, region: str, limit: int) -> None:
    """The e2e config's 4 creation slots per account-region (small, so that the contention test meets
    them) would make 300 resources wait their turn four at a time; this deploys the slot limits a
    `limits.places` entry for the fleet's account-region gives (config -> SLOT_LIMITS is proven by
    tests/infra/test_every_config_field.py), into the functions that read them."""
    functions = boto3.client("lambda", region_name=REGION)
    listed = [f for page in functions.get_paginator("list_functions").paginate() for f in page["Functions"]]
    for function in listed:
        variables = function.get("Environment", {}).get("Variables", {})
        if "SLOT_LIMITS" in variables:
            limits = json.loads(variables["SLOT_LIMITS"])
            limits["places"][f"{account}/{region}"] = {"snapshot": limit}
            functions.update_function_configuration(
                FunctionName=function["FunctionName"],
                Environment={"Variables": {**variables, "SLOT_LIMITS": json.dumps(limits)}})


def create_fleet(count: int) -> None:
    client = boto3.client("rds", region_name=REGION)
    for number in range(count):
        client.create_db_instance(
            DBInstanceIdentifier=f"fleet-{number:04d}", Engine="postgres", DBInstanceClass="db.t3.micro",
            AllocatedStorage=20, MasterUsername="admin_user", MasterUserPassword="not-a-real-secret-1",
            Tags=[{"Key": "backup", "Value": "fleet"}])


def test_a_session_of_300_resources_stays_within_every_payload_limit(harness):
    # 300 snapshots in one account-region need a raised quota (AWS's default is 100: the quota check
    # would fail the 101st resource at once); this stands in for a Service Quotas increase.
    moto_patches.MANUAL_SNAPSHOT_QUOTAS[(CONTROL_ACCOUNT, REGION, "ManualSnapshots")] = 400
    raise_creation_slots(CONTROL_ACCOUNT, REGION, 400)
    create_fleet(300)
    described = harness.run({"policy": "fleet"}, name="fleet-300", timeout=1800)
    summary = summary_of(described)
    assert described["status"] == "SUCCEEDED", summary
    assert summary["counts"] == {"resources": 300, "succeeded": 300, "warnings": 0, "failed": 0}
    session_events = harness.history(described["executionArn"])
    assert largest_payload(session_events) <= PAYLOAD_BUDGET
    assert len(session_events) < 100, "the session's history does not grow with its resources"
    children = harness.resource_executions(described)
    assert len(children) == 300
    for child in children[:20]:
        assert largest_payload(harness.history(child)) <= PAYLOAD_BUDGET
    report = report_of(described)
    assert len(report["resources"]) == 300 and all(r["snapshot_arn"] for r in report["resources"])


def test_two_sessions_share_the_snapshot_slots_of_an_account_region(harness, monkeypatch):
    limit = E2E_CONFIG["limits"]["snapshot_creations"]
    create_instance("orders-db")  # nightly names it
    for number in range(4):
        create_instance(f"nightly-{number}", tags={"backup": "nightly"})
        create_instance(f"regional-{number}", tags={"backup": "regional"})
    peak, lock, acquire = [0], threading.Lock(), slots.acquire

    def counted(table, kind, account, region, holder, **kwargs):
        in_use = acquire(table, kind, account, region, holder, **kwargs)
        if kind == slots.SNAPSHOT and in_use is not None:
            with lock:
                peak[0] = max(peak[0], in_use)
        return in_use

    monkeypatch.setattr(slots, "acquire", counted)
    with faults.slow_snapshots(describes_before_available=3):
        first = harness.start({"policy": "nightly"}, name="contention-a")
        second = harness.start({"policy": "regional"}, name="contention-b")
        reports = [report_of(harness.wait(first, 600)), report_of(harness.wait(second, 600))]
    assert [r["status"] for r in reports] == ["Success", "Success"], reports
    assert peak[0] == limit, "the two sessions' 9 resources used every slot, and never more"
    waited = [arn for described in (harness.sfn.describe_execution(executionArn=first),
                                    harness.sfn.describe_execution(executionArn=second))
              for arn in harness.resource_executions(described)
              if any(e.get("stateEnteredEventDetails", {}).get("name") == "Wait for slot"
                     for e in harness.history(arn))]
    assert waited, "some resource waited for a slot instead of failing"
    table = boto3.client("dynamodb", region_name=REGION)
    item = table.get_item(TableName=harness.app.control.outputs["SessionTableName"],
                          Key={"pk": {"S": slots.slot_key(slots.SNAPSHOT, CONTROL_ACCOUNT, REGION)}})["Item"]
    assert item["holders"]["M"] == {}, "every slot was given back"


def test_a_full_quota_fails_the_resource_at_once_with_what_to_do(harness):
    create_instance("orders-db")
    moto_patches.MANUAL_SNAPSHOT_QUOTAS[(CONTROL_ACCOUNT, REGION, "ManualSnapshots")] = 1
    boto3.client("rds", region_name=REGION).create_db_snapshot(DBSnapshotIdentifier="users-own",
                                                               DBInstanceIdentifier="orders-db")
    described = harness.run({"policy": "nightly"}, name="quota-full")
    summary = summary_of(described)
    assert described["status"] == "FAILED" and summary["counts"]["failed"] == 1
    error = summary["failed_resources"][0]["error"]
    assert error.startswith("ManualSnapshotQuotaFull:")
    assert f"account {CONTROL_ACCOUNT} region {REGION} has 1 of 1 manual DB snapshots" in error
    assert "Raise the quota" in error
    (child,) = harness.resource_executions(described)
    creates = [e for e in harness.history(child) if e.get("stateEnteredEventDetails", {}).get("name")
               == "Create snapshot"]
    assert len(creates) == 1, "not retried: a full quota does not clear by waiting"
    assert [s["DBSnapshotIdentifier"] for s in db_snapshots("orders-db")] == ["users-own"]
    assert json.loads(json.dumps(summary))  # the Fail cause is the summary
