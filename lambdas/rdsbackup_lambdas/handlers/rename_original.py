"""Lambda state ``rename_original`` (mode replace): rename the existing DB instance, or the cluster and
each of its instances, to ``<id>-replaced-<restore>``; the renamed original is left running.

Input:  ``{"plan"}``.  Output: ``{"stage": "renamed", "ready": false, ...}`` at ``$.step``.
Env:    none.  Raises: ``RestoreFailed``, ``DBNotAvailable``, ``Throttled``.
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas.observability import lambda_handler
from rdsbackup_lambdas.restore import steps
from rdsbackup_lambdas.restore.models import StepInput


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return steps.rename_original(StepInput.model_validate(event).plan)
