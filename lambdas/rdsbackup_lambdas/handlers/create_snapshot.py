"""Lambda state ``create_snapshot``: start the session's DB snapshot (instance) or DB cluster snapshot.

The name derives from the session (``rdsbackup-<policy>-<resource id>-<session suffix>``), so a retry
returns the snapshot the first try made instead of failing or making a second one.

Input:  ITEM (``session_id``, ``policy``, ``resource``, ``access_role_arn``).
Output: ``{"arn", "id", "kind", "account", "region", "kms_key_id", "encrypted", "status", "existed"}``
(``result_path`` ``$.snapshot``).
Env:    none.
Raises: ``SourceNotFound``, ``SnapshotQuotaExceeded``, ``Throttled``, ``DBNotAvailable``, ``SnapshotFailed``.
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas import snapshot_steps
from rdsbackup_lambdas.models import Item
from rdsbackup_lambdas.observability import lambda_handler


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return snapshot_steps.create_snapshot(Item.model_validate(event))
