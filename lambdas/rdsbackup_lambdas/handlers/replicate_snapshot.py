"""Lambda state ``replicate_snapshot``: one reconciliation pass of the replication (Wait/Choice loop).

Input:  ITEM with ``snapshot``, ``replication`` and, after the first pass, the previous ``replica``.
Output: ``{"done": bool, "phase": "copy-slot"|"stage"|"share"|"copy"|"tag"|"cleanup"|"done", "attempt": n,
"wait_seconds": n, "waited_seconds": n, "arn": replica ARN | null, "staging_arn": str | null,
"target": {"account", "region"}, "steps": [...], "warnings": [...]}`` (``result_path`` ``$.replica``).
Env:    ``TAG_KMS_KEY_ARN``, ``TABLE_NAME`` (copy slots), ``SLOT_LIMITS`` (optional), ``POLICIES_FILE``.
Raises: ``ReplicationTargetNotConfigured`` (the item's target is not its policy's), ``ReplicationTimeout``,
``ReplicationNotPossible``, ``ManualSnapshotQuotaFull``, ``SnapshotFailed``,
``SnapshotQuotaExceeded``, ``Throttled``, ``TagLimitExceeded``, ``TagMetadataError`` subclasses (the primary's
tags are not trusted).
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas import replication, snapshot_steps
from rdsbackup_lambdas.config import PoliciesConfig, SlotConfig, TagConfig
from rdsbackup_lambdas.models import Item
from rdsbackup_lambdas.observability import lambda_handler


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    item = Item.model_validate(event)
    # the target must be the policy's, as shipped with the code: never one the execution input names
    replication.require_configured_target(item, PoliciesConfig.from_env().policies)
    codec = snapshot_steps.tag_codec(TagConfig.from_env().tag_kms_key_arn)
    return replication.replicate_snapshot(item, codec, SlotConfig.from_env())
