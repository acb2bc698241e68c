"""session_report: the resources' recorded results, the full report in S3, SNS on failure or warning, the
DynamoDB record written last, and a fixed-size summary as the execution output."""

from __future__ import annotations

import json
import time

import boto3
from rdsbackup_lambdas import session_store
from rdsbackup_lambdas.handlers import release_lease, session_report
from rdsbackup_lambdas.session_report import MAX_LISTED_FAILURES

from tests.unit.conftest import REGION

SESSION_ID = "demo-20261125T031500-a1b2c3"


def arn(name: str) -> str:
    return f"arn:aws:rds:us-east-1:123456789012:db:{name}"


def ended(name: str, *, error: dict | None = None, **extra) -> dict:
    """A resource's ITEM as its execution's last state (release_lease) receives it."""
    return {
        "session_id": SESSION_ID, "policy": "demo",
        "resource": {"arn": arn(name), "id": name, "kind": "instance", "account": "123456789012", "region": REGION},
        "lease": {"owner": SESSION_ID, "expires_at": 0, "acquired_at": time.time() - 42},
        "snapshot": None if error else {"arn": f"{arn(name)}-snap", "id": f"{name}-snap", "kind": "instance",
                                        "account": "123456789012", "region": REGION, "started": True},
        "replica": None, "retention": {"deleted": ["old"], "replica_deleted": ["old-replica"], "warnings": []},
        "error": error, **extra,
    }


def session(world, names: list[str]) -> dict:
    """resolve_policy's output for a session selecting `names` (its items in the sessions bucket)."""
    items = [{"resource": {"arn": arn(name)}} for name in names]
    return {"session_id": SESSION_ID, "policy": "demo", "started_at": "2026-11-25T03:15:00Z", "max_concurrency": 4,
            "resource_count": len(items), "items_key": session_store.put_items(world.bucket, SESSION_ID, items)}


def run(world, ctx, names: list[str], results: list[dict]) -> dict:
    for result in results:
        release_lease.handler(result, ctx)
    return session_report.handler({"session": session(world, names), "error": None}, ctx)


def record(world) -> dict:
    key = {"pk": {"S": f"session#{SESSION_ID}"}}
    return world.client("dynamodb").get_item(TableName=world.table, Key=key)["Item"]


def full_report(summary: dict) -> dict:
    location = summary["report"]
    body = boto3.client("s3", region_name=REGION).get_object(Bucket=location["bucket"], Key=location["key"])["Body"]
    return json.loads(body.read())


def test_successful_session_is_recorded_and_not_notified(world, ctx):
    summary = run(world, ctx, ["orders"], [ended("orders")])
    assert summary["status"] == "Success" and summary["session_id"] == SESSION_ID
    assert summary["counts"] == {"resources": 1, "succeeded": 1, "warnings": 0, "failed": 0}
    [resource] = full_report(summary)["resources"]
    assert resource["status"] == "Success" and resource["error"] is None
    assert resource["retention_deleted"] == ["old", "old-replica"]
    assert 41 <= resource["duration_seconds"] < 60
    saved = record(world)
    assert saved["status"]["S"] == "Success" and json.loads(saved["summary"]["S"]) == summary
    assert saved["report_uri"]["S"] == summary["report"]["uri"]
    assert world.sns_messages() == []


def test_one_failed_resource_fails_the_session_and_notifies(world, ctx):
    cause = json.dumps({"errorType": "SnapshotQuotaExceeded", "errorMessage": "quota reached for orders"})
    summary = run(world, ctx, ["orders", "billing"],
                  [ended("orders", error={"Error": "SnapshotQuotaExceeded", "Cause": cause}), ended("billing")])
    assert summary["status"] == "Failed"
    assert summary["failed_resources"] == [{"arn": arn("orders"),
                                            "error": "SnapshotQuotaExceeded: quota reached for orders"}]
    statuses = {r["arn"]: r["status"] for r in full_report(summary)["resources"]}
    assert statuses == {arn("orders"): "Failed", arn("billing"): "Success"}
    [message] = world.sns_messages()
    assert message["Subject"] == "rds-backup demo: Failed"
    assert "SnapshotQuotaExceeded: quota reached for orders" in message["Message"]
    assert summary["report"]["uri"] in message["Message"]
    assert record(world)["failed_count"]["N"] == "1"


def test_a_resource_that_recorded_no_result_is_failed_not_forgotten(world, ctx):
    summary = run(world, ctx, ["orders", "vanished"], [ended("orders")])
    assert summary["status"] == "Failed" and summary["counts"]["failed"] == 1
    assert summary["failed_resources"][0]["arn"] == arn("vanished")
    assert summary["failed_resources"][0]["error"].startswith("NoResultRecorded:")
    assert record(world)["status"]["S"] == "Failed"


def test_the_summary_stays_the_same_size_however_many_resources_fail(world, ctx):
    names = [f"db-{number:04d}" for number in range(300)]
    error = {"Error": "SnapshotFailed", "Cause": json.dumps({"errorMessage": "x" * 2000})}
    summary = run(world, ctx, names, [ended(name, error=error) for name in names])
    assert summary["counts"]["failed"] == 300 and len(summary["failed_resources"]) == MAX_LISTED_FAILURES
    assert summary["failed_not_listed"] == 300 - MAX_LISTED_FAILURES
    assert len(json.dumps(summary)) < 16 * 1024, "the summary must fit a Fail cause (32,768 characters)"
    assert len(full_report(summary)["resources"]) == 300


def test_warnings_make_a_warning_session_and_notify(world, ctx):
    warned = ended("orders", replica={"arn": "arn:replica", "warnings": ["replica stays unencrypted"]})
    summary = run(world, ctx, ["orders"], [warned])
    assert summary["status"] == "Warning" and summary["counts"]["warnings"] == 1
    assert full_report(summary)["resources"][0]["replica_arns"] == ["arn:replica"]
    assert "replica stays unencrypted" in world.sns_messages()[0]["Message"]


def test_failed_policy_resolution_is_reported(world, ctx):
    cause = json.dumps({"errorType": "UnknownPolicy", "errorMessage": "unknown policy 'demo' (configured: none)"})
    event = {"session": None, "policy": "demo", "execution_name": "run-1", "started_at": "2026-11-25T03:15:00Z",
             "error": {"Error": "UnknownPolicy", "Cause": cause}}
    summary = session_report.handler(event, ctx)
    assert summary["status"] == "Failed" and summary["counts"]["resources"] == 0
    assert summary["error"] == "UnknownPolicy: unknown policy 'demo' (configured: none)"
    assert summary["session_id"].startswith("demo-20261125T031500-")
    assert len(world.sns_messages()) == 1
