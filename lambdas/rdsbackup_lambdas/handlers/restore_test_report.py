"""Lambda state ``restore_test_report``: the run's verdict per source, recorded, measured, notified on failure.

Input:  ``{"session": {...}, "tests": [TEST-with-results, ...], "error": null | {"Error", "Cause"}}``.
Output: ``{"session_id", "policy", "kind": "restore_test", "status": "Passed"|"Failed", "started_at", "ended_at",
"sources": [{"source", "throwaway", "snapshot_arn", "restore_point_id", "status", "failures", "tables_checked",
"time_to_restore_seconds", "duration_seconds", "left_for_sweeper", "warnings"}], "error"}``.
Env:    ``TABLE_NAME``, ``TOPIC_ARN``.
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas import restore_test_report
from rdsbackup_lambdas.config import ReportConfig
from rdsbackup_lambdas.observability import lambda_handler


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    config = ReportConfig.from_env()
    session = event.get("session") or {"session_id": event.get("execution_name"), "policy": event.get("policy"),
                                       "started_at": event.get("started_at")}
    return restore_test_report.report_run(session, event.get("tests") or [], config.table_name, config.topic_arn,
                                          error=event.get("error"))
