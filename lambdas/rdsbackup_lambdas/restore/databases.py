"""DB instances and Aurora clusters as a restore sees them: exists?, status, restore, rename, delete.

Every call goes through one RDS client of the target's account and region; AWS error codes become our
error names (``Throttled``, ``DBNotAvailable`` for InvalidDBInstanceState, ...), so the state machine
retries them as in the backup workflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from rdsbackup_lambdas import aws_errors
from rdsbackup_lambdas.models import Kind

RESTORE_TAG = "rdsbackup:restore"
LEFTOVER_TAG = "rdsbackup:sweep"
AVAILABLE = "available"
FAILED_STATUSES = frozenset({"failed", "incompatible-restore", "incompatible-parameters", "incompatible-network",
                             "incompatible-option-group", "inaccessible-encryption-credentials", "storage-full"})
_ALREADY_EXISTS = frozenset({"DBInstanceAlreadyExists", "DBInstanceAlreadyExistsFault", "DBClusterAlreadyExistsFault",
                             "DBClusterAlreadyExists"})


@dataclass(frozen=True)
class Database:
    """A DB instance or cluster as found: status, tags, members (cluster), the raw description."""

    kind: Kind
    identifier: str
    arn: str
    status: str
    tags: dict[str, str]
    members: tuple[str, ...] = ()
    raw: dict[str, Any] | None = None

    @property
    def restore_id(self) -> str | None:
        """The restore that created it (our plaintext tag), or None."""
        return self.tags.get(RESTORE_TAG)


class Databases:
    """DB instances and clusters of one account and region."""

    def __init__(self, rds: Any, where: str):
        self.rds, self.where = rds, where

    def find(self, kind: Kind, identifier: str) -> Database | None:
        """The instance or cluster named ``identifier``, or None when there is none."""
        try:
            if kind == "instance":
                found = self.rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"]
            else:
                found = self.rds.describe_db_clusters(DBClusterIdentifier=identifier)["DBClusters"]
        except ClientError as exc:
            if aws_errors.error_code(exc) in aws_errors.NOT_FOUND_CODES:
                return None
            aws_errors.raise_translated(exc, f"describe DB {kind} {identifier!r} in {self.where}")
            raise
        if not found:
            return None
        raw = found[0]
        tags = {t["Key"]: t.get("Value", "") for t in raw.get("TagList") or []}
        if kind == "instance":
            return Database(kind, raw["DBInstanceIdentifier"], raw["DBInstanceArn"], raw.get("DBInstanceStatus", ""),
                            tags, raw=raw)
        members = tuple(m["DBInstanceIdentifier"] for m in raw.get("DBClusterMembers") or [])
        return Database(kind, raw["DBClusterIdentifier"], raw["DBClusterArn"], raw.get("Status", ""), tags, members,
                        raw)

    def restore(self, kind: Kind, parameters: dict[str, Any]) -> bool:
        """Restore a snapshot; False when the target exists already (a retry of this step)."""
        try:
            if kind == "instance":
                self.rds.restore_db_instance_from_db_snapshot(**parameters)
            else:
                self.rds.restore_db_cluster_from_snapshot(**parameters)
        except ClientError as exc:
            if aws_errors.error_code(exc) in _ALREADY_EXISTS:
                return False
            target = parameters.get("DBInstanceIdentifier") or parameters.get("DBClusterIdentifier")
            aws_errors.raise_translated(exc, f"restore DB {kind} {target!r} from a snapshot in {self.where}")
        return True

    def create_member(self, parameters: dict[str, Any]) -> bool:
        """Create a DB instance in a cluster; False when it exists already (a retry)."""
        try:
            self.rds.create_db_instance(**parameters)
        except ClientError as exc:
            if aws_errors.error_code(exc) in _ALREADY_EXISTS:
                return False
            aws_errors.raise_translated(
                exc, f"create DB instance {parameters['DBInstanceIdentifier']!r} in cluster "
                     f"{parameters['DBClusterIdentifier']!r} in {self.where}")
        return True

    def rename(self, kind: Kind, identifier: str, new_identifier: str) -> None:
        try:
            if kind == "instance":
                self.rds.modify_db_instance(DBInstanceIdentifier=identifier, NewDBInstanceIdentifier=new_identifier,
                                            ApplyImmediately=True)
            else:
                self.rds.modify_db_cluster(DBClusterIdentifier=identifier, NewDBClusterIdentifier=new_identifier,
                                           ApplyImmediately=True)
        except ClientError as exc:
            aws_errors.raise_translated(exc, f"rename DB {kind} {identifier!r} to {new_identifier!r} in {self.where}")

    def delete(self, kind: Kind, identifier: str) -> None:
        """Delete without a final snapshot (what a failed restore made holds nothing to keep)."""
        try:
            if kind == "instance":
                self.rds.delete_db_instance(DBInstanceIdentifier=identifier, SkipFinalSnapshot=True,
                                            DeleteAutomatedBackups=True)
            else:
                self.rds.delete_db_cluster(DBClusterIdentifier=identifier, SkipFinalSnapshot=True)
        except ClientError as exc:
            if aws_errors.error_code(exc) in aws_errors.NOT_FOUND_CODES:
                return
            aws_errors.raise_translated(exc, f"delete DB {kind} {identifier!r} in {self.where}")

    def tag(self, arn: str, tags: dict[str, str]) -> None:
        try:
            self.rds.add_tags_to_resource(ResourceName=arn, Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
        except ClientError as exc:
            aws_errors.raise_translated(exc, f"tag {arn}")
