"""session_report: the DynamoDB record, SNS on failure or warning, and the execution output."""

from __future__ import annotations

import json
import time

from rdsbackup_lambdas.handlers import session_report

SESSION = {"session_id": "demo-20261125T031500-a1b2c3", "policy": "demo", "started_at": "2026-11-25T03:15:00Z",
           "max_concurrency": 4, "items": []}


def result(name: str, *, error: dict | None = None, **extra) -> dict:
    arn = f"arn:aws:rds:us-east-1:123456789012:db:{name}"
    return {
        "resource": {"arn": arn, "id": name},
        "lease": {"owner": SESSION["session_id"], "expires_at": 0, "acquired_at": time.time() - 42},
        "snapshot": None if error else {"arn": f"{arn}-snap"},
        "replica": None, "retention": {"deleted": ["old"], "replica_deleted": ["old-replica"], "warnings": []},
        "error": error, **extra,
    }


def record(world) -> dict:
    key = {"pk": {"S": f"session#{SESSION['session_id']}"}}
    return world.client("dynamodb").get_item(TableName=world.table, Key=key)["Item"]


def test_successful_session_is_recorded_and_not_notified(world, ctx):
    report = session_report.handler({"session": SESSION, "results": [result("orders")], "error": None}, ctx)
    assert report["status"] == "Success" and report["session_id"] == SESSION["session_id"]
    [resource] = report["resources"]
    assert resource["status"] == "Success" and resource["error"] is None
    assert resource["retention_deleted"] == ["old", "old-replica"]
    assert 41 <= resource["duration_seconds"] < 60
    saved = record(world)
    assert saved["status"]["S"] == "Success" and json.loads(saved["report"]["S"]) == report
    assert world.sns_messages() == []


def test_one_failed_resource_fails_the_session_and_notifies(world, ctx):
    cause = json.dumps({"errorType": "SnapshotQuotaExceeded", "errorMessage": "quota reached for orders"})
    results = [result("orders", error={"Error": "SnapshotQuotaExceeded", "Cause": cause}), result("billing")]
    report = session_report.handler({"session": SESSION, "results": results}, ctx)
    assert report["status"] == "Failed"
    assert report["resources"][0]["error"] == "SnapshotQuotaExceeded: quota reached for orders"
    assert report["resources"][1]["status"] == "Success"
    [message] = world.sns_messages()
    assert message["Subject"] == "rds-backup demo: Failed"
    assert "SnapshotQuotaExceeded: quota reached for orders" in message["Message"]
    assert record(world)["failed_count"]["N"] == "1"


def test_warnings_make_a_warning_session_and_notify(world, ctx):
    warned = result("orders", replica={"arn": "arn:replica", "warnings": ["replica stays unencrypted"]})
    report = session_report.handler({"session": SESSION, "results": [warned]}, ctx)
    assert report["status"] == "Warning"
    assert report["resources"][0]["replica_arns"] == ["arn:replica"]
    assert "replica stays unencrypted" in world.sns_messages()[0]["Message"]


def test_failed_policy_resolution_is_reported(world, ctx):
    cause = json.dumps({"errorType": "UnknownPolicy", "errorMessage": "unknown policy 'demo' (configured: none)"})
    event = {"session": None, "policy": "demo", "execution_name": "run-1", "started_at": "2026-11-25T03:15:00Z",
             "results": [], "error": {"Error": "UnknownPolicy", "Cause": cause}}
    report = session_report.handler(event, ctx)
    assert report["status"] == "Failed" and report["resources"] == []
    assert report["error"] == "UnknownPolicy: unknown policy 'demo' (configured: none)"
    assert report["session_id"].startswith("demo-20261125T031500-")
    assert len(world.sns_messages()) == 1
