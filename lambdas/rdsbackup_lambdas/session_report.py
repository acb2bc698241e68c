"""The end of a session: a record in DynamoDB, an SNS message on failure or warning, and the output."""

from __future__ import annotations

import json
import time
from typing import Any

from rdsbackup_lambdas import aws_sessions, backup_freshness
from rdsbackup_lambdas.clock import now_iso
from rdsbackup_lambdas.observability import MetricUnit, logger, metrics

_SUBJECT_MAX = 100


def _error_text(error: Any) -> str | None:
    """``"<Error>: <message>"`` from a Catch's ``{"Error", "Cause"}`` (Cause is the Lambda's JSON)."""
    if not error:
        return None
    if not isinstance(error, dict):
        return str(error)
    name = error.get("Error") or "Error"
    cause = error.get("Cause")
    message = cause
    if isinstance(cause, str):
        try:
            parsed = json.loads(cause)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            message = parsed.get("errorMessage") or parsed.get("message") or cause
    return f"{name}: {message}" if message else str(name)


def _warnings(result: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for key in ("replica", "retention"):
        part = result.get(key)
        if isinstance(part, dict):
            found += [str(w) for w in part.get("warnings") or []]
            if key == "retention" and part.get("rejected_tags"):
                found.append(
                    f"{part['rejected_tags']} snapshot(s) carry an rds-backup marker with untrusted metadata "
                    "(forged, altered or copied tags); they were left alone"
                )
    cleanup = result.get("image_cleanup")
    if isinstance(cleanup, dict):
        found += [str(w) for w in cleanup.get("warnings") or []]
        found += [f"left for the orphan sweeper (tagged rdsbackup:sweep=true): {left}"
                  for left in cleanup.get("left_for_sweeper") or []]
    return found


def resource_summary(result: dict[str, Any], now: float) -> dict[str, Any]:
    resource = result.get("resource") or {}
    snapshot = result.get("snapshot") or {}
    replica = result.get("replica") or {}
    retention = result.get("retention") or {}
    lease = result.get("lease") or {}
    image = result.get("image") or {}
    error = _error_text(result.get("error"))
    acquired = lease.get("acquired_at")
    duration = round(now - float(acquired), 1) if isinstance(acquired, (int, float)) else None
    if isinstance(image.get("duration_seconds"), (int, float)):  # the image-level backup's own duration
        duration = round(float(image["duration_seconds"]), 1)
    return {
        "arn": resource.get("arn"),
        "status": "Failed" if error else "Success",
        "snapshot_arn": snapshot.get("arn"),
        "replica_arns": [replica["arn"]] if replica.get("arn") else [],
        "retention_deleted": list(retention.get("deleted") or []) + list(retention.get("replica_deleted") or []),
        "restore_point_id": image.get("restore_point_id"),
        "bytes": image.get("bytes"),
        "new_bytes": image.get("new_bytes"),
        "duration_seconds": duration,
        "error": error,
        "warnings": _warnings(result),
    }


def build_report(
    session: dict[str, Any], results: list[dict[str, Any]], now: float | None = None, error: Any = None
) -> dict[str, Any]:
    """The execution output. ``error`` is the session-level failure (``resolve_policy`` failed)."""
    now = time.time() if now is None else now
    resources = [resource_summary(r, now) for r in results]
    session_error = _error_text(error)
    if session_error or any(r["status"] == "Failed" for r in resources):
        status = "Failed"
    elif any(r["warnings"] for r in resources):
        status = "Warning"
    else:
        status = "Success"
    return {
        "session_id": session.get("session_id"),
        "policy": session.get("policy"),
        "status": status,
        "started_at": session.get("started_at"),
        "ended_at": now_iso(),
        "resources": resources,
        "error": session_error,
    }


def _message(report: dict[str, Any]) -> str:
    lines = [
        f"rds-backup session {report['session_id']} (policy {report['policy']}): {report['status']}",
        f"started {report['started_at']}, ended {report['ended_at']}",
        "",
    ]
    if report.get("error"):
        lines += [f"session error: {report['error']}", ""]
    for r in report["resources"]:
        lines.append(f"- {r['arn']}: {r['status']}")
        if r["error"]:
            lines.append(f"    error: {r['error']}")
        lines += [f"    warning: {w}" for w in r["warnings"]]
    lines += ["", "Report:", json.dumps(report, indent=2)]
    return "\n".join(lines)


def session_metrics(report: dict[str, Any]) -> None:
    """What the deployment's dashboard shows of a session: its status, bytes backed up and newly stored."""
    metrics.add_metric(name=f"Sessions{report['status']}", unit=MetricUnit.Count, value=1)
    for field, metric in (("bytes", "BytesBackedUp"), ("new_bytes", "BytesAdded")):
        values = [r[field] for r in report["resources"] if isinstance(r.get(field), (int, float))]
        if values:
            metrics.add_metric(name=metric, unit=MetricUnit.Bytes, value=sum(values))


def report_session(
    session: dict[str, Any], results: list[dict[str, Any]], table: str, topic_arn: str, error: Any = None
) -> dict[str, Any]:
    """Record the session, notify on failure/warning, return the execution output."""
    report = build_report(session, results, error=error)
    failed = sum(1 for r in report["resources"] if r["status"] == "Failed") or int(bool(report["error"]))
    if failed:
        metrics.add_metric(name="Failures", unit=MetricUnit.Count, value=failed)
    for r in report["resources"]:
        if r["duration_seconds"] is not None and r["status"] == "Success":
            metrics.add_metric(name="DurationSeconds", unit=MetricUnit.Seconds, value=r["duration_seconds"])
    session_metrics(report)
    ddb = aws_sessions.client("dynamodb", None)
    ddb.put_item(
        TableName=table,
        Item={
            "pk": {"S": f"session#{report['session_id']}"},
            "policy": {"S": str(report["policy"])},
            "status": {"S": report["status"]},
            "started_at": {"S": str(report["started_at"])},
            "ended_at": {"S": report["ended_at"]},
            "resource_count": {"N": str(len(report["resources"]))},
            "failed_count": {"N": str(failed)},
            "report": {"S": json.dumps(report)},
        },
    )
    backup_freshness.record_successes(report, table)
    if report["status"] != "Success":
        subject = f"rds-backup {report['policy']}: {report['status']}"[:_SUBJECT_MAX]
        sns = aws_sessions.client("sns", topic_arn.split(":")[3])
        sns.publish(TopicArn=topic_arn, Subject=subject, Message=_message(report))
        logger.warning("session did not fully succeed; notified", extra={"status": report["status"]})
    else:
        logger.info("session succeeded")
    return report
