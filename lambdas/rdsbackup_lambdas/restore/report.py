"""The end of a restore: a record in DynamoDB, an SNS message on failure, and the execution output."""

from __future__ import annotations

import json
import time
from typing import Any

from rdsbackup_lambdas import aws_sessions
from rdsbackup_lambdas.clock import now_iso, parse_time
from rdsbackup_lambdas.observability import MetricUnit, logger, metrics
from rdsbackup_lambdas.restore.models import CleanupState, Plan
from rdsbackup_lambdas.restore.plan import restore_id_for
from rdsbackup_lambdas.restore.steps import target_databases

# the same "<Error>: <message>" text as a backup session report
from rdsbackup_lambdas.session_report import _error_text as error_text

RECORD_DAYS = 400


def _created(plan: Plan) -> list[dict[str, Any]]:
    """The ARNs and statuses of what the restore made, read back from RDS."""
    databases = target_databases(plan)
    wanted = [(plan.kind, plan.target_identifier)] + [("instance", i.identifier) for i in plan.instances]
    created = []
    for kind, identifier in wanted:
        found = databases.find(kind, identifier)
        entry: dict[str, Any] = {"kind": kind, "identifier": identifier, "arn": found.arn if found else None,
                                 "status": found.status if found else "missing"}
        if kind == "instance" and found is not None and plan.kind == "cluster":
            raw = found.raw or {}
            entry.update({"class": raw.get("DBInstanceClass"), "availability_zone": raw.get("AvailabilityZone"),
                          "promotion_tier": raw.get("PromotionTier"),
                          "writer": identifier == (plan.writer.identifier if plan.writer else None)})
        created.append(entry)
    return created


def restore_report(*, request: dict[str, Any], plan: Plan | None, error: Any, cleanup: CleanupState | None,
                   execution_name: str | None, started_at: str | None, table_name: str,
                   topic_arn: str) -> dict[str, Any]:
    """The restore's record; the execution's output (or, failed, its cause)."""
    failed = error is not None
    start = parse_time(started_at)
    report: dict[str, Any] = {
        "restore_id": plan.restore_id if plan else restore_id_for(execution_name, started_at),
        "status": "Failed" if failed else "Success",
        "restore": request.get("restore", "snapshot"),
        "snapshot_arn": request.get("snapshot_arn"),
        "mode": request.get("mode", "new"),
        "target": {"identifier": plan.target_identifier if plan else (request.get("target") or {}).get("identifier"),
                   "account": plan.target.account if plan else None, "region": plan.target.region if plan else None,
                   "kind": plan.kind if plan else None},
        "started_at": started_at,
        "ended_at": now_iso(),
        "duration_seconds": round(time.time() - start.timestamp(), 1) if start else None,
        "error": error_text(error),
    }
    if plan is not None:
        report.update({
            "source": plan.source or None,
            "metadata_verified": plan.metadata_verified,
            "settings_from_metadata": plan.settings_from_metadata,
            "settings_from_input": plan.settings_from_input,
            "renamed_aside": [r.model_dump() for r in plan.renames] if not failed else [],
        })
        if not failed:
            report["created"] = _created(plan)
    if cleanup is not None:
        report["cleanup"] = {key: getattr(cleanup, key) for key in
                             ("deleted", "renamed_back", "left_for_sweeper", "kept", "warnings")}
    return _finish(report, table_name, topic_arn)


def database_restore_report(*, item: dict[str, Any], error: Any, execution_name: str | None,
                            started_at: str | None, table_name: str, topic_arn: str) -> dict[str, Any]:
    """The record of a database-level restore (the worker's result and its cleanup)."""
    failed = error is not None
    request = item.get("request") or {}
    image = item.get("image") or {}
    cleanup = item.get("image_cleanup") or {}
    start = parse_time(started_at)
    report = {
        "restore_id": item.get("session_id") or restore_id_for(execution_name, started_at),
        "status": "Failed" if failed else "Success",
        "restore": "database",
        "policy": request.get("policy"),
        "restore_point_id": request.get("restore_point_id"),
        "target": {"arn": (item.get("resource") or {}).get("arn") or (request.get("target") or {}).get("arn")},
        "databases": request.get("databases"),
        "target_database": request.get("target_database"),
        "replace": request.get("replace", False),
        "include_globals": request.get("include_globals", False),
        "restored": image.get("restored"),
        "started_at": started_at,
        "ended_at": now_iso(),
        "duration_seconds": round(time.time() - start.timestamp(), 1) if start else None,
        "error": error_text(error),
        "cleanup": {"warnings": cleanup.get("warnings") or [],
                    "left_for_sweeper": cleanup.get("left_for_sweeper") or []} if cleanup else None,
    }
    return _finish(report, table_name, topic_arn)


def _finish(report: dict[str, Any], table_name: str, topic_arn: str) -> dict[str, Any]:
    """Record the report, notify when it failed, count it; the execution's output."""
    failed = report["status"] == "Failed"
    _record(report, table_name)
    if failed:
        _notify(report, topic_arn)
    metrics.add_metric(name="RestoresFailed" if failed else "RestoresSucceeded", unit=MetricUnit.Count, value=1)
    logger.info("restore finished", extra={"restore_id": report["restore_id"], "restore": report["restore"],
                                           "status": report["status"]})
    return report


def _record(report: dict[str, Any], table_name: str) -> None:
    """One item per restore, next to the backup sessions (``restore#<id>``), the report as JSON."""
    ddb = aws_sessions.client("dynamodb", None)
    ddb.put_item(TableName=table_name, Item={
        "pk": {"S": f"restore#{report['restore_id']}"},
        "status": {"S": report["status"]},
        "started_at": {"S": str(report["started_at"])},
        "ended_at": {"S": report["ended_at"]},
        "target": {"S": str(report["target"].get("identifier") or report["target"].get("arn"))},
        "report": {"S": json.dumps(report)},
        "ttl": {"N": str(int(time.time()) + RECORD_DAYS * 86400)},
    })


def _notify(report: dict[str, Any], topic_arn: str) -> None:
    sns = aws_sessions.client("sns", topic_arn.split(":")[3])
    subject = f"rds-backup restore {report['restore_id']} failed"[:100]
    sns.publish(TopicArn=topic_arn, Subject=subject, Message=json.dumps(report, indent=2, default=str))
