"""One backup per source at a time: a lease in DynamoDB with an owner (the session) and an expiry.

Item ``pk = "lease#<resource arn>"`` with ``owner`` and ``expires_at`` (epoch seconds). Acquiring is a
conditional put that succeeds when there is no lease, when it has expired (a crashed holder's lease
lapses), or when this session already holds it (a retried Lambda). Releasing deletes the item only if
this session owns it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from rdsbackup_lambdas import aws_sessions
from rdsbackup_lambdas.errors import LeaseHeld
from rdsbackup_lambdas.observability import logger


def lease_key(resource_arn: str) -> str:
    return f"lease#{resource_arn}"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _table_client() -> Any:
    return aws_sessions.client("dynamodb", None)


def acquire(table: str, resource_arn: str, owner: str, seconds: int, now: float | None = None) -> dict[str, Any]:
    """Take (or renew) the lease of ``resource_arn`` for ``owner``; raise ``LeaseHeld`` if another has it."""
    ddb = _table_client()
    now = time.time() if now is None else now
    expires_at = int(now) + seconds
    try:
        ddb.put_item(
            TableName=table,
            Item={
                "pk": {"S": lease_key(resource_arn)},
                "owner": {"S": owner},
                "expires_at": {"N": str(expires_at)},
                "acquired_at": {"N": f"{now:.3f}"},
                "resource_arn": {"S": resource_arn},
            },
            ConditionExpression="attribute_not_exists(pk) OR expires_at < :now OR #owner = :me",
            ExpressionAttributeNames={"#owner": "owner"},
            ExpressionAttributeValues={":now": {"N": str(int(now))}, ":me": {"S": owner}},
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
            raise
        current = ddb.get_item(TableName=table, Key={"pk": {"S": lease_key(resource_arn)}}, ConsistentRead=True)
        held = current.get("Item", {})
        holder = held.get("owner", {}).get("S", "unknown")
        until = int(held.get("expires_at", {}).get("N", "0"))
        raise LeaseHeld(
            f"a backup of {resource_arn} is already running (session {holder}, until {_iso(until)})"
        ) from exc
    logger.info("lease acquired", extra={"expires_at": expires_at})
    return {"owner": owner, "expires_at": expires_at, "acquired_at": round(now, 3)}


def release(table: str, resource_arn: str, owner: str) -> dict[str, Any]:
    """Release the lease if ``owner`` holds it; a lease held by someone else is left alone."""
    ddb = _table_client()
    try:
        ddb.delete_item(
            TableName=table,
            Key={"pk": {"S": lease_key(resource_arn)}},
            ConditionExpression="#owner = :me",
            ExpressionAttributeNames={"#owner": "owner"},
            ExpressionAttributeValues={":me": {"S": owner}},
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
            raise
        logger.info("lease not ours (or already gone); left alone")
        return {"released": False, "owner": owner}
    logger.info("lease released")
    return {"released": True, "owner": owner}
