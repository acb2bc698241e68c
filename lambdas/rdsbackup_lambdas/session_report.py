"""The end of a session: the full report in S3, an SNS message on failure or warning, the session record
in DynamoDB (written last), and a fixed-size summary as the execution's output."""

from __future__ import annotations

import json
from typing import Any

from rdsbackup_lambdas import aws_sessions, backup_freshness, session_store
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


MAX_LISTED_FAILURES = 20  # failed resources named in the summary (the full report names them all)
_MAX_ERROR_CHARS = 400
_MAX_MESSAGE_LINES = 200
NO_RESULT = ("NoResultRecorded: the resource's execution ended without recording a result (it failed, timed "
             "out or was stopped); see the session's Map Run")


def missing_result(arn: str) -> dict[str, Any]:
    """The result of a resource whose execution recorded none."""
    return {"arn": arn, "status": "Failed", "snapshot_arn": None, "replica_arns": [], "retention_deleted": [],
            "restore_point_id": None, "bytes": None, "duration_seconds": None, "error": NO_RESULT, "warnings": []}


def build_report(session: dict[str, Any], resources: list[dict[str, Any]], error: Any = None) -> dict[str, Any]:
    """The full report from the resources' results (``resource_summary``). ``error`` is the session-level
    failure (``resolve_policy`` failed)."""
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
        "resources": sorted(resources, key=lambda r: str(r["arn"])),
        "error": session_error,
    }


def summary_of(report: dict[str, Any], location: dict[str, str] | None) -> dict[str, Any]:
    """The execution output: a fixed-size summary of the report (counts, the first failed resources, where
    the full report is), whatever the number of resources."""
    resources = report["resources"]
    failed = [r for r in resources if r["status"] == "Failed"]
    return {
        "session_id": report["session_id"],
        "policy": report["policy"],
        "status": report["status"],
        "started_at": report["started_at"],
        "ended_at": report["ended_at"],
        "counts": {
            "resources": len(resources),
            "succeeded": sum(1 for r in resources if r["status"] != "Failed" and not r["warnings"]),
            "warnings": sum(1 for r in resources if r["status"] != "Failed" and r["warnings"]),
            "failed": len(failed),
        },
        "failed_resources": [{"arn": r["arn"], "error": (r["error"] or "")[:_MAX_ERROR_CHARS]}
                             for r in failed[:MAX_LISTED_FAILURES]],
        "failed_not_listed": max(0, len(failed) - MAX_LISTED_FAILURES),
        "report": location,
        "error": (report["error"] or "")[:_MAX_ERROR_CHARS] or None,
    }


def _message(report: dict[str, Any], summary: dict[str, Any]) -> str:
    counts = summary["counts"]
    lines = [
        f"rds-backup session {report['session_id']} (policy {report['policy']}): {report['status']}",
        f"started {report['started_at']}, ended {report['ended_at']}",
        f"{counts['resources']} resources: {counts['succeeded']} succeeded, {counts['warnings']} with warnings, "
        f"{counts['failed']} failed",
        f"full report: {summary['report']['uri']}" if summary["report"] else "",
        "",
    ]
    if report.get("error"):
        lines += [f"session error: {report['error']}", ""]
    listed = []
    for r in report["resources"]:
        if r["status"] == "Failed" or r["warnings"]:
            listed.append(f"- {r['arn']}: {r['status']}")
            if r["error"]:
                listed.append(f"    error: {r['error'][:_MAX_ERROR_CHARS]}")
            listed += [f"    warning: {w[:_MAX_ERROR_CHARS]}" for w in r["warnings"]]
    if len(listed) > _MAX_MESSAGE_LINES:
        listed = [*listed[:_MAX_MESSAGE_LINES], "... (the full report lists every resource)"]
    return "\n".join(lines + listed)


def session_metrics(report: dict[str, Any]) -> None:
    """What the deployment's dashboard shows of a session: its status, bytes backed up and newly stored."""
    metrics.add_metric(name=f"Sessions{report['status']}", unit=MetricUnit.Count, value=1)
    for field, metric in (("bytes", "BytesBackedUp"), ("new_bytes", "BytesAdded")):
        values = [r[field] for r in report["resources"] if isinstance(r.get(field), (int, float))]
        if values:
            metrics.add_metric(name=metric, unit=MetricUnit.Bytes, value=sum(values))


def collect_results(session: dict[str, Any], bucket: str, results_table: str) -> list[dict[str, Any]]:
    """Every selected resource's recorded result; a resource that recorded none counts as failed."""
    recorded = {r["arn"]: r for r in session_store.read_results(results_table, session["session_id"])}
    expected = [item["resource"]["arn"] for item in session_store.read_items(bucket, session["items_key"])]
    return [recorded.get(arn) or missing_result(arn) for arn in expected]


def report_session(session: dict[str, Any], resources: list[dict[str, Any]], *, table: str, topic_arn: str,
                   bucket: str, error: Any = None) -> dict[str, Any]:
    """Write the full report (S3), notify on failure/warning (SNS, with the report's address), then the
    session record (DynamoDB), last; return the fixed-size summary."""
    report = build_report(session, resources, error=error)
    location = session_store.put_report(bucket, str(report["session_id"]), report)
    summary = summary_of(report, location)
    failed = summary["counts"]["failed"] or int(bool(report["error"]))
    if failed:
        metrics.add_metric(name="Failures", unit=MetricUnit.Count, value=failed)
    session_metrics(report)
    # when each source last had a successful backup (the RPO check reads it)
    backup_freshness.record_successes(report, table)
    if report["status"] != "Success":
        subject = f"rds-backup {report['policy']}: {report['status']}"[:_SUBJECT_MAX]
        sns = aws_sessions.client("sns", topic_arn.split(":")[3])
        sns.publish(TopicArn=topic_arn, Subject=subject, Message=_message(report, summary))
        logger.warning("session did not fully succeed; notified", extra={"status": report["status"]})
    else:
        logger.info("session succeeded")
    # Written last, from what the resources recorded: a record saying Success means they all succeeded.
    aws_sessions.client("dynamodb", None).put_item(
        TableName=table,
        Item={
            "pk": {"S": f"session#{report['session_id']}"},
            "policy": {"S": str(report["policy"])},
            "status": {"S": report["status"]},
            "started_at": {"S": str(report["started_at"])},
            "ended_at": {"S": report["ended_at"]},
            "resource_count": {"N": str(summary["counts"]["resources"])},
            "failed_count": {"N": str(failed)},
            "report_uri": {"S": location["uri"]},
            "summary": {"S": json.dumps(summary)},
        },
    )
    return summary
