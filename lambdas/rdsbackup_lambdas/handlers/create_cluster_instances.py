"""Lambda state ``create_cluster_instances``: create the restored cluster's writer, or all its readers.

Input:  ``{"plan", "which": "writer" | "readers"}``.  Output: ``{"stage": which, "ready": false, ...}``
at ``$.step``.  Each instance gets its recorded class, AZ, parameter group and promotion tier.
Env:    none.  Raises: ``TargetExists``, ``DBNotAvailable``, ``Throttled``.
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas.errors import RestoreInputInvalid
from rdsbackup_lambdas.observability import lambda_handler
from rdsbackup_lambdas.restore import steps
from rdsbackup_lambdas.restore.models import StepInput


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    which = event.get("which")
    if which not in (steps.WRITER, steps.READERS):
        raise RestoreInputInvalid(f"create_cluster_instances: 'which' must be writer or readers, not {which!r}")
    return steps.create_instances(StepInput.model_validate(event).plan, which)
