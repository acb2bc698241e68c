"""RDS's manual-snapshot quota, read before a snapshot is made so a full quota fails at once.

RDS allows 100 manual DB snapshots and 100 manual DB cluster snapshots per account and region by
default (adjustable in Service Quotas). ``describe_account_attributes`` reports each quota's ``Used``
and ``Max``, so a raised quota is seen without any config.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from rdsbackup_lambdas import aws_errors
from rdsbackup_lambdas.errors import ManualSnapshotQuotaFull
from rdsbackup_lambdas.models import Kind

QUOTA_NAMES: dict[str, str] = {"instance": "ManualSnapshots", "cluster": "ManualClusterSnapshots"}
_SERVICE_QUOTA_NAMES = {"instance": "Manual DB instance snapshots", "cluster": "Manual DB cluster snapshots"}


def manual_snapshot_usage(rds: Any, kind: Kind, where: str) -> tuple[int, int]:
    """(used, max) of the manual-snapshot quota for ``kind`` in the client's account and region."""
    try:
        quotas = rds.describe_account_attributes()["AccountQuotas"]
    except ClientError as exc:
        aws_errors.raise_translated(exc, f"read the RDS account quotas in {where}")
        raise
    name = QUOTA_NAMES[kind]
    quota = next((q for q in quotas if q.get("AccountQuotaName") == name), None)
    if quota is None:
        raise ManualSnapshotQuotaFull(f"RDS reports no {name} quota in {where}; cannot check room for a snapshot")
    return int(quota["Used"]), int(quota["Max"])


def require_room(rds: Any, kind: Kind, where: str, *, adding: int = 1) -> tuple[int, int]:
    """Raise ``ManualSnapshotQuotaFull`` unless ``adding`` more manual snapshots fit; return (used, max)."""
    used, maximum = manual_snapshot_usage(rds, kind, where)
    if used + adding > maximum:
        noun = "DB snapshots" if kind == "instance" else "DB cluster snapshots"
        raise ManualSnapshotQuotaFull(
            f"{where} has {used} of {maximum} manual {noun} (RDS quota {QUOTA_NAMES[kind]}): no room for "
            f"another. Raise the quota (Service Quotas, RDS '{_SERVICE_QUOTA_NAMES[kind]}') or lower "
            "snapshot_retention of the policies backing up databases there, or delete old manual snapshots"
        )
    return used, maximum
