"""Lambda state ``create_snapshot``: start the session's DB snapshot (instance) or DB cluster snapshot.

The name derives from the session (``rdsbackup-<policy>-<resource id>-<session suffix>``), so a retry
returns the snapshot the first try made instead of failing or making a second one.

Before creating, the manual-snapshot quota must have room and a snapshot slot of the account-region
must be free (``slots.py``); while none is, the state machine waits and calls again.

Input:  ITEM (``session_id``, ``policy``, ``resource``, ``access_role_arn``, ``wait``; ``snapshot`` is the
previous result while waiting for a slot).
Output: ``{"started": true, "arn", "id", "kind", "account", "region", "kms_key_id", "encrypted", "status",
"existed"}``, or ``{"started": false, "attempt", "wait_seconds", "waited_seconds"}`` while no slot is free
(``result_path`` ``$.snapshot``).
Env:    ``TABLE_NAME`` (slots), ``SLOT_LIMITS`` (optional).
Raises: ``SourceNotFound``, ``ManualSnapshotQuotaFull``, ``SlotWaitTimeout``, ``SnapshotQuotaExceeded``,
``Throttled``, ``DBNotAvailable``, ``SnapshotFailed``.
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas import snapshot_steps
from rdsbackup_lambdas.config import SlotConfig
from rdsbackup_lambdas.models import Item
from rdsbackup_lambdas.observability import lambda_handler


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return snapshot_steps.create_snapshot(Item.model_validate(event), SlotConfig.from_env())
