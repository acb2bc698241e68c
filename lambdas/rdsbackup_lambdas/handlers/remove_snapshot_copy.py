"""Lambda state ``remove_snapshot_copy``: after a restore from a copy, delete the copy and withdraw the share.

Input:  ``{"plan"}``.  Output: ``{"removed": ["snapshot copy <id>", "share of <id> with <account>"]}``.
Env:    none.  Raises: ``Throttled``.
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas.observability import lambda_handler
from rdsbackup_lambdas.restore import steps
from rdsbackup_lambdas.restore.models import StepInput


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"removed": steps.remove_copy(StepInput.model_validate(event).plan)}
