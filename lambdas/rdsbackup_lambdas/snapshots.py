"""DB snapshots and DB cluster snapshots behind one small interface, and the source metadata.

RDS has parallel APIs for instance snapshots (``*_db_snapshot*``) and Aurora cluster snapshots
(``*_db_cluster_snapshot*``) with different field names; :class:`SnapshotApi` hides the difference
and returns :class:`SnapshotInfo`. AWS error codes are translated into our error names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from rdsbackup_lambdas import aws_errors
from rdsbackup_lambdas.errors import SnapshotFailed, SourceNotFound
from rdsbackup_lambdas.models import Kind, SnapshotRef

READY_STATUSES = frozenset({"available"})
FAILED_STATUSES = frozenset({"failed", "error", "deleted", "deleting"})
_SNAPSHOT_NOT_FOUND = frozenset({"DBSnapshotNotFound", "DBSnapshotNotFoundFault", "DBClusterSnapshotNotFoundFault"})
_ALREADY_EXISTS = frozenset({"DBSnapshotAlreadyExists", "DBClusterSnapshotAlreadyExistsFault"})


def split_arn(arn: str) -> tuple[str, str, str, str]:
    """(region, account, resource type, name) of an RDS ARN."""
    parts = arn.split(":", 6)
    if len(parts) != 7 or parts[2] != "rds":
        raise ValueError(f"not an RDS ARN: {arn!r}")
    return parts[3], parts[4], parts[5], parts[6]


def is_failed_status(status: str) -> bool:
    return status in FAILED_STATUSES or status.startswith("incompatible")


@dataclass
class SnapshotInfo:
    """What we need to know of a snapshot, whatever its kind."""

    arn: str
    id: str
    kind: Kind
    status: str
    encrypted: bool
    kms_key_id: str | None
    source_id: str | None
    created: datetime | None
    snapshot_type: str | None = None
    tags: list[dict[str, str]] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def account(self) -> str:
        return split_arn(self.arn)[1]

    @property
    def region(self) -> str:
        return split_arn(self.arn)[0]

    def ref(self) -> SnapshotRef:
        return SnapshotRef(
            arn=self.arn, id=self.id, kind=self.kind, account=self.account, region=self.region,
            kms_key_id=self.kms_key_id if self.encrypted else None, encrypted=self.encrypted,
        )

    @classmethod
    def from_aws(cls, kind: Kind, raw: dict[str, Any]) -> SnapshotInfo:
        if kind == "instance":
            return cls(
                arn=raw["DBSnapshotArn"], id=raw["DBSnapshotIdentifier"], kind=kind,
                status=raw.get("Status", ""), encrypted=bool(raw.get("Encrypted")),
                kms_key_id=raw.get("KmsKeyId"), source_id=raw.get("DBInstanceIdentifier"),
                created=raw.get("SnapshotCreateTime"), snapshot_type=raw.get("SnapshotType"),
                tags=raw.get("TagList"), raw=raw,
            )
        return cls(
            arn=raw["DBClusterSnapshotArn"], id=raw["DBClusterSnapshotIdentifier"], kind=kind,
            status=raw.get("Status", ""), encrypted=bool(raw.get("StorageEncrypted")),
            kms_key_id=raw.get("KmsKeyId"), source_id=raw.get("DBClusterIdentifier"),
            created=raw.get("SnapshotCreateTime"), snapshot_type=raw.get("SnapshotType"),
            tags=raw.get("TagList"), raw=raw,
        )


class SnapshotApi:
    """Snapshot operations of one kind, with one RDS client (one account and region)."""

    def __init__(self, rds: Any, kind: Kind, where: str = ""):
        self.rds = rds
        self.kind: Kind = kind
        self.where = where or f"{rds.meta.region_name}"
        self._noun = "DB snapshot" if kind == "instance" else "DB cluster snapshot"

    # -- reading ------------------------------------------------------------------------------------
    def describe(self, snapshot: str) -> SnapshotInfo | None:
        """The snapshot named ``snapshot`` (identifier or ARN), or ``None`` if it does not exist."""
        try:
            if self.kind == "instance":
                found = self.rds.describe_db_snapshots(DBSnapshotIdentifier=snapshot)["DBSnapshots"]
            else:
                found = self.rds.describe_db_cluster_snapshots(DBClusterSnapshotIdentifier=snapshot)[
                    "DBClusterSnapshots"
                ]
        except ClientError as exc:
            if aws_errors.error_code(exc) in _SNAPSHOT_NOT_FOUND:
                return None
            aws_errors.raise_translated(exc, f"describe {self._noun} {snapshot!r} in {self.where}")
        return SnapshotInfo.from_aws(self.kind, found[0]) if found else None

    def list_manual(self, source_id: str) -> list[SnapshotInfo]:
        """Manual snapshots of one source (also copies, which keep the source's identifier)."""
        try:
            if self.kind == "instance":
                pages = self.rds.get_paginator("describe_db_snapshots").paginate(
                    DBInstanceIdentifier=source_id, SnapshotType="manual"
                )
                return [SnapshotInfo.from_aws("instance", s) for p in pages for s in p["DBSnapshots"]]
            pages = self.rds.get_paginator("describe_db_cluster_snapshots").paginate(
                DBClusterIdentifier=source_id, SnapshotType="manual"
            )
            return [SnapshotInfo.from_aws("cluster", s) for p in pages for s in p["DBClusterSnapshots"]]
        except ClientError as exc:
            aws_errors.raise_translated(exc, f"list {self._noun}s of {source_id!r} in {self.where}")
            raise  # unreachable

    def tags(self, info: SnapshotInfo) -> list[dict[str, str]]:
        """The snapshot's tags (from the describe result when AWS included them)."""
        if info.tags is not None:
            return info.tags
        try:
            return self.rds.list_tags_for_resource(ResourceName=info.arn)["TagList"]
        except ClientError as exc:
            aws_errors.raise_translated(exc, f"list tags of {info.arn}")
            raise

    def shared_with(self, snapshot_id: str) -> list[str]:
        try:
            if self.kind == "instance":
                result = self.rds.describe_db_snapshot_attributes(DBSnapshotIdentifier=snapshot_id)[
                    "DBSnapshotAttributesResult"
                ]["DBSnapshotAttributes"]
            else:
                result = self.rds.describe_db_cluster_snapshot_attributes(
                    DBClusterSnapshotIdentifier=snapshot_id
                )["DBClusterSnapshotAttributesResult"]["DBClusterSnapshotAttributes"]
        except ClientError as exc:
            aws_errors.raise_translated(exc, f"read sharing of {self._noun} {snapshot_id!r} in {self.where}")
            raise
        for attribute in result:
            if attribute.get("AttributeName") == "restore":
                return list(attribute.get("AttributeValues") or [])
        return []

    # -- writing ------------------------------------------------------------------------------------
    def create(self, snapshot_id: str, source_id: str, tags: list[dict[str, str]]) -> SnapshotInfo:
        """Create a snapshot of ``source_id``; if it already exists (a retry), return the existing one."""
        what = f"create {self._noun} {snapshot_id!r} of {source_id!r} in {self.where}"
        try:
            if self.kind == "instance":
                raw = self.rds.create_db_snapshot(
                    DBSnapshotIdentifier=snapshot_id, DBInstanceIdentifier=source_id, Tags=tags
                )["DBSnapshot"]
            else:
                raw = self.rds.create_db_cluster_snapshot(
                    DBClusterSnapshotIdentifier=snapshot_id, DBClusterIdentifier=source_id, Tags=tags
                )["DBClusterSnapshot"]
        except ClientError as exc:
            if aws_errors.error_code(exc) in _ALREADY_EXISTS:
                existing = self.describe(snapshot_id)
                if existing is not None:
                    return existing
            aws_errors.raise_translated(exc, what)
            raise
        return SnapshotInfo.from_aws(self.kind, raw)

    def copy(
        self, source_arn: str, target_id: str, *, kms_key_id: str | None, source_region: str | None,
        tags: list[dict[str, str]],
    ) -> SnapshotInfo:
        """Copy ``source_arn`` to ``target_id`` here; returns the existing copy on a retry."""
        what = f"copy {source_arn} to {self._noun} {target_id!r} in {self.where}"
        params: dict[str, Any] = {"Tags": tags, "CopyTags": False}
        if kms_key_id:
            params["KmsKeyId"] = kms_key_id
        if source_region and source_region != self.rds.meta.region_name:
            # boto3 turns SourceRegion into the PreSignedUrl that cross-region copies need.
            params["SourceRegion"] = source_region
        try:
            if self.kind == "instance":
                raw = self.rds.copy_db_snapshot(
                    SourceDBSnapshotIdentifier=source_arn, TargetDBSnapshotIdentifier=target_id, **params
                )["DBSnapshot"]
            else:
                raw = self.rds.copy_db_cluster_snapshot(
                    SourceDBClusterSnapshotIdentifier=source_arn, TargetDBClusterSnapshotIdentifier=target_id,
                    **params,
                )["DBClusterSnapshot"]
        except ClientError as exc:
            code = aws_errors.error_code(exc)
            if code in _ALREADY_EXISTS:
                existing = self.describe(target_id)
                if existing is not None:
                    return existing
            if code in _SNAPSHOT_NOT_FOUND:
                raise SnapshotFailed(f"cannot {what}: the source snapshot is not visible here ({code})") from exc
            aws_errors.raise_translated(exc, what)
            raise
        return SnapshotInfo.from_aws(self.kind, raw)

    def delete(self, snapshot_id: str) -> bool:
        """Delete a snapshot; ``False`` when it was already gone."""
        try:
            if self.kind == "instance":
                self.rds.delete_db_snapshot(DBSnapshotIdentifier=snapshot_id)
            else:
                self.rds.delete_db_cluster_snapshot(DBClusterSnapshotIdentifier=snapshot_id)
        except ClientError as exc:
            if aws_errors.error_code(exc) in _SNAPSHOT_NOT_FOUND:
                return False
            aws_errors.raise_translated(exc, f"delete {self._noun} {snapshot_id!r} in {self.where}")
        return True

    def set_shared(self, snapshot_id: str, account: str, shared: bool) -> None:
        """Add (or remove) ``account`` to the snapshot's ``restore`` attribute."""
        change = {"ValuesToAdd": [account]} if shared else {"ValuesToRemove": [account]}
        try:
            if self.kind == "instance":
                self.rds.modify_db_snapshot_attribute(
                    DBSnapshotIdentifier=snapshot_id, AttributeName="restore", **change
                )
            else:
                self.rds.modify_db_cluster_snapshot_attribute(
                    DBClusterSnapshotIdentifier=snapshot_id, AttributeName="restore", **change
                )
        except ClientError as exc:
            verb = "share" if shared else "unshare"
            aws_errors.raise_translated(exc, f"{verb} {self._noun} {snapshot_id!r} with {account} in {self.where}")

    def replace_tags(self, arn: str, add: list[dict[str, str]], remove_keys: list[str]) -> None:
        try:
            if remove_keys:
                self.rds.remove_tags_from_resource(ResourceName=arn, TagKeys=remove_keys)
            if add:
                self.rds.add_tags_to_resource(ResourceName=arn, Tags=add)
        except ClientError as exc:
            aws_errors.raise_translated(exc, f"tag {arn}")


# -- the source database ------------------------------------------------------------------------------


def describe_instance(rds: Any, instance_id: str, where: str) -> dict[str, Any]:
    try:
        found = rds.describe_db_instances(DBInstanceIdentifier=instance_id)["DBInstances"]
    except ClientError as exc:
        if aws_errors.error_code(exc) in aws_errors.NOT_FOUND_CODES:
            raise SourceNotFound(f"DB instance {instance_id!r} not found in {where}") from exc
        aws_errors.raise_translated(exc, f"describe DB instance {instance_id!r} in {where}")
        raise
    if not found:
        raise SourceNotFound(f"DB instance {instance_id!r} not found in {where}")
    return found[0]


def describe_cluster(rds: Any, cluster_id: str, where: str) -> dict[str, Any]:
    try:
        found = rds.describe_db_clusters(DBClusterIdentifier=cluster_id)["DBClusters"]
    except ClientError as exc:
        if aws_errors.error_code(exc) in aws_errors.NOT_FOUND_CODES:
            raise SourceNotFound(f"DB cluster {cluster_id!r} not found in {where}") from exc
        aws_errors.raise_translated(exc, f"describe DB cluster {cluster_id!r} in {where}")
        raise
    if not found:
        raise SourceNotFound(f"DB cluster {cluster_id!r} not found in {where}")
    return found[0]


def _parameter_group(instance: dict[str, Any]) -> str | None:
    groups = instance.get("DBParameterGroups") or []
    return groups[0].get("DBParameterGroupName") if groups else None


def _instance_settings(instance: dict[str, Any]) -> dict[str, Any]:
    return {
        "identifier": instance.get("DBInstanceIdentifier"),
        "class": instance.get("DBInstanceClass"),
        "engine": instance.get("Engine"),
        "engine_version": instance.get("EngineVersion"),
        "availability_zone": instance.get("AvailabilityZone"),
        "multi_az": instance.get("MultiAZ"),
        "parameter_group": _parameter_group(instance),
        "option_group": next(
            (o.get("OptionGroupName") for o in instance.get("OptionGroupMemberships") or []), None
        ),
        "promotion_tier": instance.get("PromotionTier"),
        "publicly_accessible": instance.get("PubliclyAccessible"),
        "ca_certificate": instance.get("CACertificateIdentifier"),
        "performance_insights": instance.get("PerformanceInsightsEnabled"),
        "monitoring_interval": instance.get("MonitoringInterval"),
        "auto_minor_version_upgrade": instance.get("AutoMinorVersionUpgrade"),
    }


def _own_tags(resource: dict[str, Any]) -> dict[str, str]:
    """The source's own tags (a restore puts them back); AWS's and ours are not the user's."""
    return {t["Key"]: t.get("Value", "") for t in resource.get("TagList") or []
            if not t["Key"].startswith(("aws:", "rdsbackup:"))}


def source_metadata(rds: Any, kind: Kind, source_id: str, where: str) -> dict[str, Any]:
    """What a restore needs to rebuild the source: settings of the instance, or of the cluster and
    every DB instance in it (a cluster snapshot restores only the cluster, not its instances)."""
    if kind == "instance":
        db = describe_instance(rds, source_id, where)
        settings = _instance_settings(db)
        settings.update(
            {
                "subnet_group": (db.get("DBSubnetGroup") or {}).get("DBSubnetGroupName"),
                "security_groups": [g["VpcSecurityGroupId"] for g in db.get("VpcSecurityGroups") or []],
                "port": (db.get("Endpoint") or {}).get("Port") or db.get("DbInstancePort"),
                "storage_type": db.get("StorageType"),
                "allocated_storage": db.get("AllocatedStorage"),
                "iops": db.get("Iops"),
                "storage_encrypted": db.get("StorageEncrypted"),
                "kms_key_id": db.get("KmsKeyId"),
                "iam_auth": db.get("IAMDatabaseAuthenticationEnabled"),
                "deletion_protection": db.get("DeletionProtection"),
                "tags": _own_tags(db),
            }
        )
        return {"instance": settings}
    cluster = describe_cluster(rds, source_id, where)
    members = {m["DBInstanceIdentifier"]: m for m in cluster.get("DBClusterMembers") or []}
    instances: list[dict[str, Any]] = []
    if members:
        pages = rds.get_paginator("describe_db_instances").paginate(
            Filters=[{"Name": "db-cluster-id", "Values": [cluster["DBClusterIdentifier"]]}]
        )
        for page in pages:
            for db in page["DBInstances"]:
                settings = _instance_settings(db)
                member = members.get(db["DBInstanceIdentifier"], {})
                settings["writer"] = bool(member.get("IsClusterWriter"))
                if settings["promotion_tier"] is None:
                    settings["promotion_tier"] = member.get("PromotionTier")
                instances.append(settings)
    instances.sort(key=lambda i: (not i["writer"], i["identifier"] or ""))
    scaling = cluster.get("ServerlessV2ScalingConfiguration")
    return {
        "cluster": {
            "identifier": cluster.get("DBClusterIdentifier"),
            "engine": cluster.get("Engine"),
            "engine_version": cluster.get("EngineVersion"),
            "engine_mode": cluster.get("EngineMode"),
            "subnet_group": cluster.get("DBSubnetGroup"),
            "security_groups": [g["VpcSecurityGroupId"] for g in cluster.get("VpcSecurityGroups") or []],
            "parameter_group": cluster.get("DBClusterParameterGroup"),
            "port": cluster.get("Port"),
            "database_name": cluster.get("DatabaseName"),
            "storage_encrypted": cluster.get("StorageEncrypted"),
            "kms_key_id": cluster.get("KmsKeyId"),
            "iam_auth": cluster.get("IAMDatabaseAuthenticationEnabled"),
            "deletion_protection": cluster.get("DeletionProtection"),
            "backup_retention_period": cluster.get("BackupRetentionPeriod"),
            "serverless_v2_scaling": scaling,
            "tags": _own_tags(cluster),
        },
        "instances": instances,
    }
