"""Lambda state ``check_maintenance``: one poll of the backup-account session's worker.

Input:  ``{"worker": $.worker}`` (from ``start_maintenance``, then the previous poll).
Output: ``$.worker`` + ``{"done", "attempt", "wait_seconds", "waited_seconds"}``; when done, ``"result"``: the
worker's archived/forgotten/pruned/archive-retention summary and warnings.
Env:    none.
Raises: ``WorkerFailed`` (failed to start, failed, no result), ``WorkerTimedOut`` (the task is stopped first),
``Throttled``.
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas import maintenance
from rdsbackup_lambdas.observability import lambda_handler


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return maintenance.check(maintenance.MaintenanceState.model_validate(event["worker"]))
