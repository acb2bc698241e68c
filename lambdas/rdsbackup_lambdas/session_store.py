"""Where a session keeps what must not travel in a state's payload (256 KiB) or history.

- its items (one ITEM per selected resource) and its full report: objects in the sessions bucket
  (``SESSIONS_BUCKET``), ``sessions/<session id>/items.json`` and ``sessions/<session id>/report.json``;
- one result per resource, written by the resource's own execution when it ends: the results table
  (``RESULTS_TABLE``, key ``session_id`` + ``resource_arn``).
"""

from __future__ import annotations

import json
import time
from typing import Any

from rdsbackup_lambdas import aws_sessions

RESULT_DAYS = 400  # results outlive a year of sessions, then DynamoDB's TTL drops them


def items_key(session_id: str) -> str:
    return f"sessions/{session_id}/items.json"


def report_key(session_id: str) -> str:
    return f"sessions/{session_id}/report.json"


def _s3() -> Any:
    return aws_sessions.client("s3", None)


def put_items(bucket: str, session_id: str, items: list[dict[str, Any]]) -> str:
    """Write the session's items (the Distributed Map reads them); returns the key."""
    key = items_key(session_id)
    _s3().put_object(Bucket=bucket, Key=key, Body=json.dumps(items, separators=(",", ":")).encode(),
                     ContentType="application/json")
    return key


def read_items(bucket: str, key: str) -> list[dict[str, Any]]:
    return json.loads(_s3().get_object(Bucket=bucket, Key=key)["Body"].read())


def put_report(bucket: str, session_id: str, report: dict[str, Any]) -> dict[str, str]:
    """Write the full report; returns where it is."""
    key = report_key(session_id)
    _s3().put_object(Bucket=bucket, Key=key, Body=json.dumps(report, indent=1).encode(),
                     ContentType="application/json")
    return {"bucket": bucket, "key": key, "uri": f"s3://{bucket}/{key}"}


def put_result(table: str, session_id: str, result: dict[str, Any], now: float | None = None) -> None:
    """Record one resource's result (a retried write replaces it with the same content)."""
    now = time.time() if now is None else now
    aws_sessions.client("dynamodb", None).put_item(TableName=table, Item={
        "session_id": {"S": session_id},
        "resource_arn": {"S": str(result["arn"])},
        "status": {"S": str(result["status"])},
        "result": {"S": json.dumps(result)},
        "ttl": {"N": str(int(now) + RESULT_DAYS * 86400)},
    })


def read_results(table: str, session_id: str) -> list[dict[str, Any]]:
    """Every result recorded for the session, in resource ARN order."""
    paginator = aws_sessions.client("dynamodb", None).get_paginator("query")
    pages = paginator.paginate(TableName=table, KeyConditionExpression="session_id = :id",
                               ExpressionAttributeValues={":id": {"S": session_id}}, ConsistentRead=True)
    return [json.loads(item["result"]["S"]) for page in pages for item in page["Items"]]
