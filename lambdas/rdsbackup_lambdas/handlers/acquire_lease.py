"""Lambda state ``acquire_lease``: take the per-source lease for this session.

Input:  ITEM (``session_id``, ``resource.arn``, ``lease_seconds``).
Output: ``{"owner": session_id, "expires_at": epoch, "acquired_at": epoch}`` (``result_path`` ``$.lease``).
Env:    ``TABLE_NAME``.
Raises: ``LeaseHeld`` ("a backup of <arn> is already running (session X, until T)").
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas import leases
from rdsbackup_lambdas.config import LeaseConfig
from rdsbackup_lambdas.models import Item
from rdsbackup_lambdas.observability import lambda_handler


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    item = Item.model_validate(event)
    config = LeaseConfig.from_env()
    return leases.acquire(config.table_name, item.resource.arn, item.session_id, item.lease_seconds)
