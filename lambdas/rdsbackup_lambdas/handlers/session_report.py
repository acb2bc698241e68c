"""Lambda state ``session_report``: record the session, notify on failure, return the execution output.

Input:  ``{"session": {session_id, policy, started_at, ...}, "results": [ITEM-with-results, ...]}``;
        or, when ``resolve_policy`` failed: ``{"session": null, "policy", "execution_name", "started_at",
        "results": [], "error": {"Error", "Cause"}}`` (the report is then ``Failed`` with that error).
Output: ``{"session_id", "policy", "status": "Success"|"Warning"|"Failed", "started_at", "ended_at",
"resources": [{"arn", "status", "snapshot_arn", "replica_arns", "retention_deleted", "restore_point_id",
"bytes", "duration_seconds", "error", "warnings"}], "error": null | "<Error>: <message>"}``.
Env:    ``TABLE_NAME``, ``TOPIC_ARN``.
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas import selection, session_report
from rdsbackup_lambdas.config import ReportConfig
from rdsbackup_lambdas.models import SessionReportInput
from rdsbackup_lambdas.observability import correlate, lambda_handler


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    request = SessionReportInput.model_validate(event)
    config = ReportConfig.from_env()
    session = request.session
    if session is None:  # resolve_policy failed: describe the session from the execution
        policy = request.policy or "unknown"
        session = {
            "session_id": selection.session_id_for(policy, request.execution_name, request.started_at),
            "policy": policy,
            "started_at": request.started_at,
        }
        correlate(session["session_id"], policy=policy)
    return session_report.report_session(
        session, request.results, config.table_name, config.topic_arn, error=request.error
    )
