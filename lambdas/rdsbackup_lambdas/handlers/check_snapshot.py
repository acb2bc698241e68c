"""Lambda state ``check_snapshot``: one poll of the snapshot in the Wait/Choice loop.

Input:  ITEM with ``snapshot`` and, after the first poll, the previous ``snapshot_wait``; ``wait``.
Output: ``{"ready": bool, "attempt": n, "wait_seconds": n, "waited_seconds": n, "status": str,
"percent_progress": n | null}`` (``result_path`` ``$.snapshot_wait``). The state machine waits
``wait_seconds`` (growing by ``wait.factor`` up to ``wait.max_seconds``) and calls again until ``ready``.
The snapshot slot taken by ``create_snapshot`` is given back once the snapshot is available or failed.
Env:    ``TABLE_NAME`` (slots).
Raises: ``SnapshotWaitTimeout`` (past ``wait.timeout_seconds``), ``SnapshotFailed``, ``Throttled``.
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas import snapshot_steps
from rdsbackup_lambdas.config import SlotConfig
from rdsbackup_lambdas.models import Item
from rdsbackup_lambdas.observability import lambda_handler


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return snapshot_steps.check_snapshot(Item.model_validate(event), SlotConfig.from_env())
