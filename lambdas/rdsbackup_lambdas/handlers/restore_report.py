"""Lambda state ``restore_report``: record the restore (DynamoDB ``restore#<id>``), notify on failure
(SNS), and return the report (the execution's output, or its failure cause).

Input:  ``{"request": the execution state, "plan" | null, "error" | null, "cleanup" | null,
"execution_name", "started_at"}``; a database-level restore: ``{"item": the worker ITEM, "error", ...}``.
Output: ``{"restore_id", "status": "Success" | "Failed", "snapshot_arn", "mode", "target", "created":
[{kind, identifier, arn, status, ...}], "renamed_aside", "settings_from_metadata", "settings_from_input",
"metadata_verified", "duration_seconds", "error", "cleanup": {deleted, renamed_back, left_for_sweeper,
kept, warnings}}``.
Env:    ``TABLE_NAME``, ``TOPIC_ARN``.
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas.config import ReportConfig
from rdsbackup_lambdas.observability import lambda_handler
from rdsbackup_lambdas.restore.models import CleanupState, Plan
from rdsbackup_lambdas.restore.report import database_restore_report, restore_report


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    config = ReportConfig.from_env()
    if event.get("item") is not None:  # a database-level restore: the worker ITEM
        return database_restore_report(item=event["item"], error=event.get("error"),
                                       execution_name=event.get("execution_name"),
                                       started_at=event.get("started_at"), table_name=config.table_name,
                                       topic_arn=config.topic_arn)
    plan = Plan.model_validate(event["plan"]) if event.get("plan") else None
    cleanup = CleanupState.model_validate(event["cleanup"]) if event.get("cleanup") else None
    return restore_report(request=event.get("request") or {}, plan=plan, error=event.get("error"), cleanup=cleanup,
                          execution_name=event.get("execution_name"), started_at=event.get("started_at"),
                          table_name=config.table_name, topic_arn=config.topic_arn)
