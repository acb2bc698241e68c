"""Lambda state ``session_report``: the end of a session. Reads every resource's recorded result, writes
the full report to S3, notifies on failure or warning, records the session in DynamoDB (last), and
returns a summary of fixed size as the execution's output.

Input:  ``{"session": <resolve_policy's output>, "error": null}``; or, when ``resolve_policy`` failed:
        ``{"session": null, "policy", "execution_name", "started_at", "error": {"Error", "Cause"}}`` (the
        session is then ``Failed`` with that error).
Output: ``{"session_id", "policy", "status": "Success"|"Warning"|"Failed", "started_at", "ended_at",
"counts": {"resources", "succeeded", "warnings", "failed"}, "failed_resources": [{"arn", "error"}] (at most
20), "failed_not_listed": n, "report": {"bucket", "key", "uri"}, "error": null | "<Error>: <message>"}``.
The full report (``report.uri``) lists every resource: ``{"arn", "status", "snapshot_arn", "replica_arns",
"retention_deleted", "restore_point_id", "bytes", "duration_seconds", "error", "warnings"}``.
Env:    ``TABLE_NAME``, ``TOPIC_ARN``, ``SESSIONS_BUCKET``, ``RESULTS_TABLE``.
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas import selection, session_report
from rdsbackup_lambdas.config import ReportConfig, SessionStoreConfig
from rdsbackup_lambdas.models import SessionReportInput
from rdsbackup_lambdas.observability import correlate, lambda_handler


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    request = SessionReportInput.model_validate(event)
    config = ReportConfig.from_env()
    store = SessionStoreConfig.from_env()
    session = request.session
    if session is None:  # resolve_policy failed: describe the session from the execution
        policy = request.policy or "unknown"
        session = {
            "session_id": selection.session_id_for(policy, request.execution_name, request.started_at),
            "policy": policy,
            "started_at": request.started_at,
        }
        correlate(session["session_id"], policy=policy)
        resources: list[dict[str, Any]] = []
    else:
        resources = session_report.collect_results(session, store.bucket, store.results_table)
    return session_report.report_session(session, resources, table=config.table_name, topic_arn=config.topic_arn,
                                         bucket=store.bucket, error=request.error)
