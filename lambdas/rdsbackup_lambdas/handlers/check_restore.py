"""Lambda state ``check_restore``: one poll of the resources the last restore action covers.

Input:  ``{"plan", "step"}`` (``step.stage``: renamed, restored, writer or readers; the previous poll).
Output: ``{"stage", "ready": bool, "attempt", "wait_seconds", "waited_seconds", "statuses": {id: status}}``
at ``$.step``; the state machine waits ``wait_seconds`` and calls again until ``ready``.
Env:    none.  Raises: ``RestoreFailed`` (failed state or gone), ``RestoreWaitTimeout``, ``Throttled``.
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas.observability import lambda_handler
from rdsbackup_lambdas.restore import steps
from rdsbackup_lambdas.restore.models import StepInput, StepState


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    request = StepInput.model_validate(event)
    return steps.check_restore(request.plan, request.step or StepState())
