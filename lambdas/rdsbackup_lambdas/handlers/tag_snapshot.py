"""Lambda state ``tag_snapshot``: put the encrypted metadata on the session's snapshot.

Input:  ITEM with ``snapshot``.
Output: ``{"tag_count": n, "instances_recorded": n}`` (``result_path`` ``$.tags``).
Env:    ``TAG_KMS_KEY_ARN``.
Raises: ``TagLimitExceeded`` (with the snapshot's own tags it would exceed AWS's limits),
``SnapshotFailed``, ``SourceNotFound``, ``Throttled``.
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas import snapshot_steps
from rdsbackup_lambdas.config import TagConfig
from rdsbackup_lambdas.models import Item
from rdsbackup_lambdas.observability import lambda_handler


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    item = Item.model_validate(event)
    codec = snapshot_steps.tag_codec(TagConfig.from_env().tag_kms_key_arn)
    return snapshot_steps.tag_snapshot(item, codec)
