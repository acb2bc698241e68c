"""Lambda state ``check_worker``: one poll of the worker in the Wait/Choice loop.

Running: not done, with the next (growing) wait. Stopped with exit code 0 and a result document
``status: ok``: done, with the restore point. Failed to start, no exit code, non-zero exit or a ``failed``
result: ``WorkerFailed`` with the worker's reason. Past ``image_backup.worker.timeout_seconds``: the task is
stopped and ``WorkerTimedOut`` raised. The result document (in the control account's repository bucket)
is read with the function's own credentials.

Input:  ITEM with ``image_backup``, ``image`` (from ``start_worker``, then the previous poll) and ``wait``.
Output: ``$.image`` + ``{"done": bool, "attempt", "wait_seconds", "waited_seconds", "restore_point_id",
"bytes", "new_bytes", "duration_seconds"}`` (``result_path`` ``$.image``).
Env:    none.
Raises: ``WorkerFailed``, ``WorkerTimedOut``, ``Throttled``.
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas.image import worker
from rdsbackup_lambdas.models import Item
from rdsbackup_lambdas.observability import lambda_handler


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return worker.check_worker(Item.model_validate(event))
