"""Shared AWS limits shared across every session and policy: slots counted in DynamoDB.

RDS bounds work in progress per account and region, whoever starts it: at most 20 snapshot copies
in progress into one destination region per account, and no more manual snapshots than the quota
(100 by default). Two policies replicating into one vault region at once, or two sessions in one
account-region, must share those. Each bound is one DynamoDB item::

    pk = "slots#<kind>#<account>#<region>"   holders = {"<holder>": <expires_at epoch>, ...}

A holder (one resource of one session) takes a slot with a conditional update that adds its name
to ``holders`` only while fewer than ``limit`` are there (or it is there already: a retried Lambda
never takes two). Releasing removes the name. A holder whose execution died without releasing
expires; an acquirer that finds the item full drops expired holders and tries again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from rdsbackup_lambdas import aws_sessions
from rdsbackup_lambdas.errors import ConfigurationError
from rdsbackup_lambdas.observability import logger

SNAPSHOT = "snapshot"  # snapshot creations in progress, per account-region of the source
COPY = "copy"  # snapshot copies in progress, per destination account-region
KINDS = (SNAPSHOT, COPY)
# AWS's defaults: the manual-snapshot quota, and 20 copies in progress per destination region.
DEFAULT_LIMITS = {SNAPSHOT: 100, COPY: 20}


@dataclass(frozen=True)
class SlotLimits:
    """The limit of each kind of slot: defaults, overridden per ``"<account>/<region>"`` for raised quotas."""

    defaults: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    places: dict[str, dict[str, int]] = field(default_factory=dict)

    def limit(self, kind: str, account: str, region: str) -> int:
        return int(self.places.get(f"{account}/{region}", {}).get(kind, self.defaults.get(kind, DEFAULT_LIMITS[kind])))

    @classmethod
    def from_json(cls, raw: str) -> SlotLimits:
        """``{"defaults": {"snapshot": n, "copy": n}, "places": {"<account>/<region>": {...}}}`` (``SLOT_LIMITS``)."""
        if not raw.strip():
            return cls()
        try:
            parsed = json.loads(raw)
            defaults = {**DEFAULT_LIMITS, **{k: int(v) for k, v in (parsed.get("defaults") or {}).items()}}
            places = {place: {k: int(v) for k, v in limits.items()} for place, limits in
                      (parsed.get("places") or {}).items()}
        except (ValueError, AttributeError, TypeError) as exc:
            raise ConfigurationError(f"SLOT_LIMITS is not a valid slot-limits document: {exc}") from exc
        unknown = {k for limits in [defaults, *places.values()] for k in limits} - set(KINDS)
        if unknown:
            raise ConfigurationError(f"SLOT_LIMITS names unknown slot kinds {sorted(unknown)}; known: {list(KINDS)}")
        return cls(defaults=defaults, places=places)


def slot_key(kind: str, account: str, region: str) -> str:
    return f"slots#{kind}#{account}#{region}"


def holder_name(session_id: str, resource_arn: str) -> str:
    """One resource of one session holds at most one slot of each kind and place."""
    return f"{session_id}#{resource_arn}"


def _ddb() -> Any:
    return aws_sessions.client("dynamodb", None)


def _conditional_failed(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def _ensure_item(table: str, key: str) -> None:
    try:
        _ddb().put_item(TableName=table, Item={"pk": {"S": key}, "holders": {"M": {}}},
                        ConditionExpression="attribute_not_exists(pk)")
    except ClientError as exc:
        if not _conditional_failed(exc):
            raise


def _try_take(table: str, key: str, holder: str, limit: int, expires_at: int) -> int | None:
    """Holders in use after taking the slot, or ``None`` when every slot is taken."""
    try:
        updated = _ddb().update_item(
            TableName=table, Key={"pk": {"S": key}},
            UpdateExpression="SET holders.#h = :expires",
            ConditionExpression="attribute_exists(holders.#h) OR size(holders) < :limit",
            ExpressionAttributeNames={"#h": holder},
            ExpressionAttributeValues={":expires": {"N": str(expires_at)}, ":limit": {"N": str(limit)}},
            ReturnValues="ALL_NEW",
        )
    except ClientError as exc:
        if _conditional_failed(exc):
            return None
        raise
    return len(updated["Attributes"]["holders"]["M"])


def _drop_expired(table: str, key: str, now: float) -> int:
    item = _ddb().get_item(TableName=table, Key={"pk": {"S": key}}, ConsistentRead=True).get("Item", {})
    dropped = 0
    for name, expires in (item.get("holders", {}).get("M") or {}).items():
        if float(expires["N"]) >= now:
            continue
        try:  # only if nobody renewed it meanwhile
            _ddb().update_item(
                TableName=table, Key={"pk": {"S": key}}, UpdateExpression="REMOVE holders.#h",
                ConditionExpression="holders.#h = :seen",
                ExpressionAttributeNames={"#h": name}, ExpressionAttributeValues={":seen": expires},
            )
            dropped += 1
            logger.warning("expired slot holder dropped", extra={"slot": key, "holder": name})
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise
    return dropped


def acquire(table: str, kind: str, account: str, region: str, holder: str, *, limit: int, hold_seconds: int,
            now: float | None = None) -> int | None:
    """Take (or keep) a slot for ``holder``; returns the slots in use, or ``None`` when none is free."""
    now = time.time() if now is None else now
    key = slot_key(kind, account, region)
    _ensure_item(table, key)
    expires_at = int(now) + hold_seconds
    in_use = _try_take(table, key, holder, limit, expires_at)
    if in_use is None and _drop_expired(table, key, now):
        in_use = _try_take(table, key, holder, limit, expires_at)
    logger.info("slot " + ("taken" if in_use is not None else "not free"),
                extra={"slot": key, "in_use": in_use, "limit": limit})
    return in_use


def release(table: str, kind: str, account: str, region: str, holder: str) -> bool:
    """Give the slot back; ``False`` when ``holder`` held none (already released, or never taken)."""
    try:
        _ddb().update_item(
            TableName=table, Key={"pk": {"S": slot_key(kind, account, region)}},
            UpdateExpression="REMOVE holders.#h", ConditionExpression="attribute_exists(holders.#h)",
            ExpressionAttributeNames={"#h": holder},
        )
    except ClientError as exc:
        if _conditional_failed(exc):
            return False
        raise
    logger.info("slot released", extra={"slot": slot_key(kind, account, region)})
    return True


def in_use(table: str, kind: str, account: str, region: str) -> int:
    item = _ddb().get_item(TableName=table, Key={"pk": {"S": slot_key(kind, account, region)}},
                           ConsistentRead=True).get("Item", {})
    return len(item.get("holders", {}).get("M") or {})
