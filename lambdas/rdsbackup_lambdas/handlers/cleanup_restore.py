"""Lambda state ``cleanup_restore``: after a failure, delete what this restore created (readers, writer,
cluster; no final snapshot) unless ``keep_on_failure``, then rename the original back (mode replace).

Input:  ``{"plan" | null, "cleanup": the previous call's result}``.
Output: ``{"done": bool, "deleted", "renamed_back", "left_for_sweeper", "kept", "warnings", "wait_seconds",
...}`` at ``$.cleanup``; the state machine waits and calls again until ``done``.
Env:    none.  Raises: ``Throttled``, ``DBNotAvailable`` (retried); never fails for one resource: what cannot
be deleted is tagged ``rdsbackup:sweep=true`` and reported.
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas.observability import lambda_handler
from rdsbackup_lambdas.restore import steps
from rdsbackup_lambdas.restore.models import CleanupInput


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    request = CleanupInput.model_validate(event)
    return steps.cleanup_restore(request.plan, request.cleanup)
