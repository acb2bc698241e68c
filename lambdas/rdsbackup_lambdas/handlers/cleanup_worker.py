"""Lambda state ``cleanup_worker``: remove the worker's leftovers on every path (catch target and next state).

Stops the worker if it runs, removes the DB group from the DB (keeping every other group), revokes the
rules of both groups and deletes them (retrying ``DependencyViolation`` while the ENI detaches, bounded),
releases the temporary bucket's lease and deletes the bucket when no lease remains. Each step runs even
when another failed; what cannot be removed is tagged ``rdsbackup:sweep=true`` and listed. Works when
earlier steps never ran, and when called twice. Never raises for what it cannot remove.

Input:  ITEM (``image_backup``; ``image`` when ``prepare_worker`` returned).
Output: ``{"complete": bool, "removed": [...], "left_for_sweeper": [...], "warnings": [...]}``
(``result_path`` ``$.image_cleanup``).
Env:    ``TABLE_NAME``; optional ``SG_DELETE_ATTEMPTS`` (10), ``SG_DELETE_INTERVAL_SECONDS`` (5),
``LOCK_WAIT_SECONDS`` (60).
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas.config import ImageConfig
from rdsbackup_lambdas.image import cleanup
from rdsbackup_lambdas.models import Item
from rdsbackup_lambdas.observability import lambda_handler


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    item = Item.model_validate(event)
    return cleanup.cleanup_worker(item, ImageConfig.from_env())
