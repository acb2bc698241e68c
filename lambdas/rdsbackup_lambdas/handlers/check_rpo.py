"""Scheduled Lambda ``check_rpo``: alarm on sources without a successful backup within their policy's RPO.

Input:  any (the schedule's event is ignored).
Output: ``{"policies": {name: {"rpo_seconds", "checked", "outside": [{"arn", "last_success", "age_seconds",
"reason"}]}}, "errors": {name: "<Error>: <message>"}}``; metric ``rdsbackup/SourcesOutsideRpo`` per
policy (dimension ``Policy``); one SNS message naming every late source and every policy not checked.
Env:    ``POLICIES_FILE`` + ``POLICIES_SHA256`` (or ``POLICIES_JSON``), ``TABLE_NAME``, ``TOPIC_ARN``.
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas import rpo
from rdsbackup_lambdas.config import PoliciesConfig, ReportConfig
from rdsbackup_lambdas.observability import lambda_handler


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    report = ReportConfig.from_env()
    return rpo.check_rpo(PoliciesConfig.from_env().policies, report.table_name, report.topic_arn)
