"""Lambda state ``copy_snapshot``: copy the snapshot into the target's account/region before a restore
there (shared with the target account first when it is another), re-encrypted with ``target.kms_key_arn``.

Input:  ``{"plan"}`` (with ``copy_across``).  Output: ``{"stage": "copied", "ready": false, ...}`` at ``$.step``.
Env:    none.  Raises: ``SnapshotFailed`` (not visible to the target), ``SnapshotQuotaExceeded``, ``Throttled``.
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas.observability import lambda_handler
from rdsbackup_lambdas.restore import steps
from rdsbackup_lambdas.restore.models import StepInput


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return steps.copy_snapshot(StepInput.model_validate(event).plan)
