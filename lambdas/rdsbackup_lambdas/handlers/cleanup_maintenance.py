"""Lambda state ``cleanup_maintenance``: the finally of the backup-account session (every path runs it):
stop the worker if it still runs.

Input:  ``{"worker": $.worker or null}``.
Output: ``{"stopped": bool, "task_arn"}``.
Env:    none.
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas import maintenance
from rdsbackup_lambdas.observability import lambda_handler


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return maintenance.cleanup(event.get("worker"))
