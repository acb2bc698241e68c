"""Lambda state ``maintenance_report``: record the backup-account session (DynamoDB
``pk = maintenance#<session id>``), publish failures and warnings to SNS, return the execution output.

Input:  ``{"policy", "execution_name", "started_at", "worker": $.worker or null, "error": $.error or null,
"cleanup"}``.
Output: ``{"session_id", "policy", "status": "Success"|"Warning"|"Failed", "archived", "forgotten",
"kept_for_archive", "archive_retention_deleted", "early_deletion_charge_usd", "warnings", "error", "cleanup",
"started_at", "ended_at"}``.
Env:    ``TABLE_NAME``, ``TOPIC_ARN``.
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas import maintenance
from rdsbackup_lambdas.config import ReportConfig
from rdsbackup_lambdas.observability import lambda_handler


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    config = ReportConfig.from_env()
    return maintenance.report(str(event.get("policy") or "unknown"), str(event.get("execution_name") or ""),
                              str(event.get("started_at") or ""), event.get("worker"), event.get("error"),
                              event.get("cleanup"), config.table_name, config.topic_arn)
