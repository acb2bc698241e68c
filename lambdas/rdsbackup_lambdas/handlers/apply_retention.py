"""Lambda state ``apply_retention``: keep the last N snapshots of the source (and of the replica target).

Input:  ITEM with ``snapshot``, ``snapshot_retention``, ``replication`` and ``replica``.
Output: ``{"deleted": [arn], "kept": [arn], "replica_deleted": [arn], "replica_kept": [arn],
"staging_deleted": [arn], "skipped_unmanaged": n, "rejected_tags": n, "warnings": [...]}``
(``result_path`` ``$.retention``).
Env:    ``TAG_KMS_KEY_ARN``, ``POLICIES_FILE``.
Raises: ``Throttled``, ``ReplicationTargetNotConfigured`` (the item's replication is not its policy's).
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas import replication, retention, snapshot_steps
from rdsbackup_lambdas.config import PoliciesConfig, TagConfig
from rdsbackup_lambdas.models import Item
from rdsbackup_lambdas.observability import lambda_handler


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    item = Item.model_validate(event)
    # the target must be the policy's, as shipped with the code: never one the execution input names
    replication.require_configured_target(item, PoliciesConfig.from_env().policies)
    codec = snapshot_steps.tag_codec(TagConfig.from_env().tag_kms_key_arn)
    return retention.apply_retention(item, codec)
