"""Lambda state ``restore_snapshot``: start restoring the snapshot as the target DB instance or cluster.

Input:  ``{"plan"}``.  Output: ``{"stage": "restored", "ready": false, ...}`` at ``$.step``.
Env:    none.  Raises: ``TargetExists`` (something not ours took the name), ``DBNotAvailable``, ``Throttled``.
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas.observability import lambda_handler
from rdsbackup_lambdas.restore import steps
from rdsbackup_lambdas.restore.models import StepInput


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return steps.restore_snapshot(StepInput.model_validate(event).plan)
