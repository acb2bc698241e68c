"""Lambda state ``release_lease``: release the per-source lease if this session holds it (every path).

Input:  ITEM (``session_id``, ``resource.arn``).
Output: ``{"released": bool, "owner": session_id}``; a lease held by another session is left alone.
Env:    ``TABLE_NAME``.
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
    return leases.release(config.table_name, item.resource.arn, item.session_id)
