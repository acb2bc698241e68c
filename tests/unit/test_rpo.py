"""check_rpo: a source whose newest successful backup is older than the RPO is named; a fresh one is not."""

from __future__ import annotations

import json
import time

from rdsbackup_lambdas import backup_freshness, rpo
from rdsbackup_lambdas import session_report as reporting
from rdsbackup_lambdas.handlers import check_rpo

from tests.unit.conftest import REGION, SOURCE_ACCOUNT, SOURCE_ROLE
from tests.unit.session_support import run_session

HOUR = 3600
RPO = 36 * HOUR


def policy(resources, rpo=RPO) -> dict:
    return {
        "selection": {"resources": list(resources), "tags": {},
                      "targets": [{"account": SOURCE_ACCOUNT, "region": REGION, "access_role_arn": SOURCE_ROLE}]},
        "snapshot_retention": 3, "rpo_seconds": rpo,
    }


def succeed(world, ctx, *names: str, at: float | None = None) -> None:
    """A session of policy demo in which these databases were backed up successfully (``at``: when)."""
    results = [{"resource": {"arn": f"arn:aws:rds:{REGION}:{SOURCE_ACCOUNT}:db:{name}", "id": name},
                "snapshot": {"arn": "snap"}, "error": None} for name in names]
    session = {"session_id": f"demo-{len(names)}", "policy": "demo", "started_at": "2026-11-25T03:15:00Z"}
    if at is None:
        run_session(world, ctx, session, results)
    else:
        report = reporting.build_report(session, [reporting.resource_summary(r, time.time()) for r in results])
        backup_freshness.record_successes(report, world.table, now=at)


def outside_metric(world, policy_name: str) -> list[float]:
    stats = world.client("cloudwatch").get_metric_statistics(
        Namespace="rdsbackup", MetricName="SourcesOutsideRpo", Dimensions=[{"Name": "Policy", "Value": policy_name}],
        StartTime=time.time() - HOUR, EndTime=time.time() + HOUR, Period=60, Statistics=["Maximum"])
    return [point["Maximum"] for point in stats["Datapoints"]]


def run(monkeypatch, ctx, policies: dict) -> dict:
    monkeypatch.delenv("POLICIES_PARAMETER", raising=False)  # (an in-process e2e run may leave it set)
    monkeypatch.setenv("POLICIES_JSON", json.dumps(policies))
    return check_rpo.handler({}, ctx)


def test_stale_source_is_named_and_fresh_one_is_not(world, ctx, monkeypatch):
    fresh, stale = world.instance("fresh"), world.instance("stale")
    succeed(world, ctx, "fresh")
    succeed(world, ctx, "stale", at=time.time() - 40 * HOUR)
    failed = {"resource": {"arn": stale["DBInstanceArn"], "id": "stale"}, "error": {"Error": "SnapshotFailed"}}
    run_session(world, ctx, {"session_id": "demo-f", "policy": "demo"}, [failed])
    world.sns_messages()  # the failed session's own message
    result = run(monkeypatch, ctx, {"demo": policy(["fresh", "stale"])})
    demo = result["policies"]["demo"]
    assert demo["checked"] == 2
    assert [source["arn"] for source in demo["outside"]] == [stale["DBInstanceArn"]]
    assert "40.0 h old (RPO 36.0 h)" in demo["outside"][0]["reason"]
    [message] = world.sns_messages()
    assert stale["DBInstanceArn"] in message["Message"] and fresh["DBInstanceArn"] not in message["Message"]
    assert message["Subject"] == "rds-backup: 1 source(s) outside their RPO"
    assert outside_metric(world, "demo") == [1.0]


def test_all_fresh_publishes_zero_and_notifies_nobody(world, ctx, monkeypatch):
    world.instance("orders")
    succeed(world, ctx, "orders", at=time.time() - 35 * HOUR)
    result = run(monkeypatch, ctx, {"demo": policy(["orders"])})
    assert result["policies"]["demo"]["outside"] == [] and result["errors"] == {}
    assert world.sns_messages() == []
    assert outside_metric(world, "demo") == [0.0]


def test_a_success_of_another_policy_does_not_count(world, ctx, monkeypatch):
    world.instance("orders")
    succeed(world, ctx, "orders")  # recorded for policy demo
    result = run(monkeypatch, ctx, {"weekly": policy(["orders"])})
    # never backed up by "weekly", but created just now: not late yet
    assert result["policies"]["weekly"]["outside"] == []
    later = rpo.check_rpo({"weekly": policy(["orders"])}, world.table, world.topic_arn,
                                    now=time.time() + 37 * HOUR)
    [late] = later["policies"]["weekly"]["outside"]
    assert late["last_success"] is None and late["reason"].startswith("never backed up, and it exists for 37.0 h")


def test_a_selected_database_that_is_gone_is_outside_its_rpo(world, ctx, monkeypatch):
    world.instance("orders")
    succeed(world, ctx, "orders")
    result = run(monkeypatch, ctx, {"demo": policy(["orders", "dropped"])})
    [gone] = result["policies"]["demo"]["outside"]
    assert gone["arn"].endswith(":db:dropped") and "cannot be found" in gone["reason"]


def test_a_policy_that_cannot_be_checked_is_reported_without_a_metric(world, ctx, monkeypatch):
    world.instance("orders")
    broken = policy(["orders"])
    broken["selection"]["targets"] = []  # invalid: the check cannot select anything
    result = run(monkeypatch, ctx, {"demo": broken})
    assert "demo" in result["errors"] and result["policies"] == {}
    [message] = world.sns_messages()
    assert "policy demo: could not be checked" in message["Message"]
    assert outside_metric(world, "demo") == []  # missing data: the alarm treats it as breaching


def _report(count: int) -> dict:
    resources = [{"arn": f"arn:aws:rds:{REGION}:{SOURCE_ACCOUNT}:db:db-{i:04d}", "status": "Success",
                  "snapshot_arn": f"snap-{i}"} for i in range(count)]
    return {"policy": "demo", "session_id": "demo-1", "resources": [*resources, {"arn": "x", "status": "Failed"}]}


def test_a_session_of_1000_sources_is_recorded_in_batches(world, monkeypatch):
    """At 1,000 databases the report stores every success in BatchWriteItem calls of 25, not 1,000 PutItems."""
    calls: list[str] = []
    ddb = world.client("dynamodb")
    ddb.meta.events.register("before-call.dynamodb.*", lambda model, **_: calls.append(model.name))
    monkeypatch.setattr(backup_freshness.aws_sessions, "client", lambda service, *_a, **_k: ddb)
    report = _report(1000)
    assert backup_freshness.record_successes(report, world.table, now=1000.0) == 1000
    assert calls == ["BatchWriteItem"] * 40
    found = backup_freshness.last_successes(world.table, "demo", [r["arn"] for r in report["resources"]])
    assert len(found) == 1000 and found[report["resources"][999]["arn"]]["snapshot_arn"] == "snap-999"


def test_items_dynamodb_leaves_unprocessed_are_written_again(world, monkeypatch):
    """BatchWriteItem may return UnprocessedItems under throttling: they are sent again, none is lost."""
    ddb = world.client("dynamodb")
    real = ddb.batch_write_item
    sent: list[int] = []

    def throttled_once(RequestItems):  # boto3's parameter name
        [(table, requests)] = RequestItems.items()
        sent.append(len(requests))
        if len(sent) == 1:  # the first call processes only its first 5 items
            real(RequestItems={table: requests[:5]})
            return {"UnprocessedItems": {table: requests[5:]}}
        return real(RequestItems=RequestItems)

    monkeypatch.setattr(ddb, "batch_write_item", throttled_once)
    monkeypatch.setattr(backup_freshness.aws_sessions, "client", lambda service, *_a, **_k: ddb)
    monkeypatch.setattr(backup_freshness, "_unprocessed_pause", lambda attempt: None)
    report = _report(30)
    assert backup_freshness.record_successes(report, world.table, now=1000.0) == 30
    assert sent == [25, 20, 5]
    found = backup_freshness.last_successes(world.table, "demo", [r["arn"] for r in report["resources"]])
    assert len(found) == 30
