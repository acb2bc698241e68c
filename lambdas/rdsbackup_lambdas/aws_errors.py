"""Translate AWS error codes into the error names the state machine retries and catches."""

from __future__ import annotations

from botocore.exceptions import ClientError

from rdsbackup_lambdas.errors import (
    DBNotAvailable,
    RdsBackupError,
    SnapshotQuotaExceeded,
    SourceNotFound,
    Throttled,
)

THROTTLING_CODES = frozenset(
    {"Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException", "RequestThrottled"}
)
QUOTA_CODES = frozenset({"SnapshotQuotaExceeded", "SnapshotQuotaExceededFault"})
NOT_AVAILABLE_CODES = frozenset(
    {"InvalidDBInstanceState", "InvalidDBInstanceStateFault", "InvalidDBClusterStateFault", "InvalidDBClusterState"}
)
NOT_FOUND_CODES = frozenset(
    {"DBInstanceNotFound", "DBInstanceNotFoundFault", "DBClusterNotFoundFault", "DBClusterNotFound"}
)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def error_message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", ""))


def translate(exc: ClientError, what: str) -> RdsBackupError | ClientError:
    """Our exception for a known AWS error code; the original ``ClientError`` otherwise.

    ``what`` names the operation and resource, e.g. "create snapshot of DB instance 'orders' in
    111111111111/eu-west-1", so the message says what failed and where.
    """
    code = error_code(exc)
    detail = f"{code}: {error_message(exc)}".rstrip(": ")
    if code in THROTTLING_CODES:
        return Throttled(f"AWS throttled {what} ({detail}); retried with backoff")
    if code in QUOTA_CODES:
        return SnapshotQuotaExceeded(
            f"cannot {what}: the manual snapshot quota is reached ({detail}); delete old snapshots "
            "or raise the quota"
        )
    if code in NOT_AVAILABLE_CODES:
        return DBNotAvailable(f"cannot {what}: the database is not in a state that allows it ({detail})")
    if code in NOT_FOUND_CODES:
        return SourceNotFound(f"cannot {what}: the database does not exist or is not visible ({detail})")
    return exc


def raise_translated(exc: ClientError, what: str) -> None:
    translated = translate(exc, what)
    if translated is exc:
        raise exc
    raise translated from exc
