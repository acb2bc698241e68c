"""The end of a restore-test run: per source a verdict, recorded, measured and (on failure) notified.

Per TEST (a source, or a source's archived point): passed or failed with the reasons (the worker's
failures naming tables, or the error of the step that failed), the time to restore (snapshot to an
available throwaway, plus the restore point's own restore and an archived point's retrieval wait: the
RTO measured), the whole test's duration, and what cleanup left for the sweeper.
The run is recorded in DynamoDB (``pk = restoretest#<session>``), each source's test time kept for the
rotation (``lasttest#<policy>#<arn>``), metrics emitted per source, and a failed run published to SNS.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from aws_lambda_powertools.metrics import single_metric

from rdsbackup_lambdas import aws_sessions, restore_test
from rdsbackup_lambdas.clock import now_iso
from rdsbackup_lambdas.observability import MetricUnit, logger, metrics
from rdsbackup_lambdas.session_report import _error_text

_SUBJECT_MAX = 100


def source_result(test: dict[str, Any], now: float) -> dict[str, Any]:
    plan = test.get("restore_test") or {}
    worker = test.get("worker") or {}
    verdict = worker.get("test") or {}
    cleanup = test.get("cleanup") or {}
    throwaway_cleanup = test.get("throwaway_cleanup") or {}
    error = _error_text(test.get("error"))
    failures = list(verdict.get("failures") or [])
    started = (test.get("timing") or {}).get("started_at")
    restored = (test.get("timing") or {}).get("restored_at")
    time_to_restore = None
    if isinstance(started, (int, float)) and isinstance(restored, (int, float)):
        # an archived point's RTO includes the hours its retrieval waited
        retrieved = float((test.get("retrieval") or {}).get("waited_seconds") or 0)
        time_to_restore = round(restored - started + float(verdict.get("restore_seconds") or 0) + retrieved, 1)
    left = list(throwaway_cleanup.get("left_for_sweeper") or []) + list(cleanup.get("left_for_sweeper") or [])
    passed = error is None and bool(verdict) and verdict.get("passed") is True
    return {
        "source": (test.get("source") or {}).get("arn"),
        "throwaway": (test.get("resource") or {}).get("id"),
        "snapshot_arn": plan.get("snapshot_arn"),
        "restore_point_id": plan.get("restore_point_id"),
        "status": "Passed" if passed else "Failed",
        "failures": failures if not error else [error, *failures],
        "compared_with_restore_point": plan.get("compare_restore_point_id"),
        "databases_checked": [d.get("database") for d in (verdict.get("snapshot") or {}).get("databases") or []],
        "tables_checked": (verdict.get("restore_point") or {}).get("tables_checked"),
        "time_to_restore_seconds": time_to_restore,
        "duration_seconds": round(now - started, 1) if isinstance(started, (int, float)) else None,
        "left_for_sweeper": left,
        # an archived point (targets: archived_restore_point): what its retrieval asked for and waited
        "archived": bool(plan.get("archived")),
        "retrieval": _retrieval_summary(test.get("retrieval")),
        "warnings": list(plan.get("warnings") or []) + list(throwaway_cleanup.get("warnings") or [])
        + list(cleanup.get("warnings") or []),
    }


def _retrieval_summary(retrieval: dict[str, Any] | None) -> dict[str, Any] | None:
    if not retrieval:
        return None
    return {key: retrieval.get(key) for key in ("repository", "storage_class", "tier", "packs", "bytes",
                                                "requested", "waiting", "waited_seconds")}


def _metrics(policy: str, result: dict[str, Any]) -> None:
    passed = result["status"] == "Passed"
    metrics.add_metric(name="RestoreTestPassed" if passed else "RestoreTestFailed", unit=MetricUnit.Count, value=1)
    per_source = [("RestoreTestPassed", MetricUnit.Count, 1 if passed else 0)]
    for field, name in (("duration_seconds", "RestoreTestDurationSeconds"),
                        ("time_to_restore_seconds", "TimeToRestoreSeconds")):
        if isinstance(result[field], (int, float)):
            metrics.add_metric(name=name, unit=MetricUnit.Seconds, value=result[field])
            per_source.append((name, MetricUnit.Seconds, result[field]))
    source_id = (result["source"] or "unknown").rsplit(":", 1)[-1]
    if os.environ.get("POWERTOOLS_METRICS_DISABLED", "").lower() in ("1", "true"):
        return  # (single_metric flushes at once and does not read the switch)
    for name, unit, value in per_source:
        with single_metric(name=name, unit=unit, value=value, namespace=metrics.namespace,
                           default_dimensions={"Policy": policy, "Source": source_id}):
            pass


def report_run(session: dict[str, Any], tests: list[dict[str, Any]], table: str, topic_arn: str,
               error: Any = None, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    results = [source_result(test, now) for test in tests]
    run_error = _error_text(error)
    status = "Failed" if run_error or any(r["status"] == "Failed" for r in results) else "Passed"
    report = {"session_id": session.get("session_id"), "policy": session.get("policy"), "kind": "restore_test",
              "status": status, "started_at": session.get("started_at"), "ended_at": now_iso(),
              "sources": results, "error": run_error}
    for result in results:
        _metrics(str(report["policy"]), result)
        if result["source"]:
            restore_test.record_tested(table, str(report["policy"]), result["source"], result["status"] == "Passed",
                                       now)
    aws_sessions.client("dynamodb", None).put_item(TableName=table, Item={
        "pk": {"S": f"restoretest#{report['session_id']}"}, "policy": {"S": str(report["policy"])},
        "status": {"S": status}, "started_at": {"S": str(report["started_at"])}, "ended_at": {"S": report["ended_at"]},
        "report": {"S": json.dumps(report)}})
    if status != "Passed" or any(r["left_for_sweeper"] for r in results):
        lines = [f"rds-backup restore test {report['session_id']} (policy {report['policy']}): {status}", ""]
        if run_error:
            lines.append(f"error: {run_error}")
        for r in results:
            lines.append(f"- {r['source']}: {r['status']}")
            lines += [f"    {failure}" for failure in r["failures"]]
            lines += [f"    left for the orphan sweeper: {left}" for left in r["left_for_sweeper"]]
        lines += ["", "Report:", json.dumps(report, indent=2)]
        subject = f"rds-backup restore test {report['policy']}: {status}"[:_SUBJECT_MAX]
        aws_sessions.client("sns", topic_arn.split(":")[3]).publish(TopicArn=topic_arn, Subject=subject,
                                                                     Message="\n".join(lines))
        logger.warning("restore test did not pass; notified", extra={"status": status})
    return report
