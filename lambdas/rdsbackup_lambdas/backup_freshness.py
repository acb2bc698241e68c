"""When each source last had a successful backup: one small DynamoDB item per (policy, source).

The session report writes it for every resource that succeeded; the RPO check reads it with
BatchGetItem for the sources a policy selects now (no scan over the growing session history).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from rdsbackup_lambdas import aws_sessions

_BATCH = 100  # BatchGetItem's limit
_WRITE_BATCH = 25  # BatchWriteItem's limit
_WRITE_ATTEMPTS = 8


def item_key(policy: str, arn: str) -> dict[str, Any]:
    return {"pk": {"S": f"lastbackup#{policy}#{arn}"}}


def record_successes(report: dict[str, Any], table: str, now: float | None = None) -> int:
    """Store the time of every resource in the session report that succeeded; returns how many.
    Written 25 to a BatchWriteItem (its limit): a session of 1,000 databases makes 40 calls, not 1,000."""
    now = time.time() if now is None else now
    policy = str(report["policy"])
    puts = [{"PutRequest": {"Item": {
        **item_key(policy, resource["arn"]),
        "policy": {"S": policy},
        "arn": {"S": resource["arn"]},
        "session_id": {"S": str(report.get("session_id"))},
        "succeeded_at": {"N": str(round(now, 3))},
        # what a restore test restores: the newest snapshot, replica and restore point of the source
        **({"restore_point_id": {"S": resource["restore_point_id"]}} if resource.get("restore_point_id") else {}),
        **({"snapshot_arn": {"S": resource["snapshot_arn"]}} if resource.get("snapshot_arn") else {}),
        **({"replica_arn": {"S": resource["replica_arns"][0]}} if resource.get("replica_arns") else {}),
    }}} for resource in report.get("resources") or []
        if resource.get("status") == "Success" and resource.get("arn")]
    ddb = aws_sessions.client("dynamodb", None)
    for start in range(0, len(puts), _WRITE_BATCH):
        _write_all(ddb, table, puts[start:start + _WRITE_BATCH])
    return len(puts)


def _write_all(ddb: Any, table: str, requests: list[dict[str, Any]]) -> None:
    """One BatchWriteItem, then again with whatever DynamoDB left unprocessed (throttling), pausing longer
    each time; gives up loudly rather than drop a success (the RPO check would then raise a false alarm)."""
    for attempt in range(_WRITE_ATTEMPTS):
        left = ddb.batch_write_item(RequestItems={table: requests}).get("UnprocessedItems") or {}
        requests = left.get(table) or []
        if not requests:
            return
        _unprocessed_pause(attempt)
    raise RuntimeError(f"DynamoDB left {len(requests)} backup-freshness records unprocessed after "
                       f"{_WRITE_ATTEMPTS} attempts (table {table})")


def _unprocessed_pause(attempt: int) -> None:
    time.sleep(min(0.05 * 2 ** attempt, 2.0))


def last_successes(table: str, policy: str, arns: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``{arn: {"succeeded_at": epoch seconds, "session_id", "restore_point_id", "snapshot_arn", "replica_arn"}}``
    for the arns that have one."""
    ddb = aws_sessions.client("dynamodb", None)
    wanted = [item_key(policy, arn) for arn in dict.fromkeys(arns)]
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(wanted), _BATCH):
        request: dict[str, Any] = {table: {"Keys": wanted[start:start + _BATCH], "ConsistentRead": True}}
        while request:
            answer = ddb.batch_get_item(RequestItems=request)
            for item in answer.get("Responses", {}).get(table, []):
                found[item["arn"]["S"]] = {
                    "succeeded_at": float(item["succeeded_at"]["N"]),
                    "session_id": item.get("session_id", {}).get("S"),
                    "restore_point_id": item.get("restore_point_id", {}).get("S"),
                    "snapshot_arn": item.get("snapshot_arn", {}).get("S"),
                    "replica_arn": item.get("replica_arn", {}).get("S"),
                }
            request = answer.get("UnprocessedKeys") or {}
    return found
