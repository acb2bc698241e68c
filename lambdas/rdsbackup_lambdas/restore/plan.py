"""``plan_restore``: read and verify the snapshot's metadata, decide every setting, check the target.

Nothing is created here, so every refusal (bad input, untrusted metadata, a target that exists) ends
the restore before anything needs cleaning up.
"""

from __future__ import annotations

import hashlib
from typing import Any

from rdsbackup_lambdas import aws_sessions
from rdsbackup_lambdas.errors import (
    RestoreInputInvalid,
    SettingsMissing,
    SnapshotFailed,
    TargetExists,
    TargetNotFound,
    TargetNotReplaceable,
)
from rdsbackup_lambdas.observability import logger
from rdsbackup_lambdas.restore.config import RestoreConfig
from rdsbackup_lambdas.restore.databases import RESTORE_TAG, Database, Databases
from rdsbackup_lambdas.restore.models import (
    MAX_IDENTIFIER,
    Place,
    Plan,
    PlannedInstance,
    Renamed,
    SnapshotCopy,
    SnapshotRestoreInput,
    SnapshotTarget,
)
from rdsbackup_lambdas.restore.replaceable import REPLACED_INFIX, Replaceable
from rdsbackup_lambdas.selection import session_id_for
from rdsbackup_lambdas.snapshots import READY_STATUSES, SnapshotApi, SnapshotInfo, split_arn
from rdsbackup_lambdas.tag_metadata import TAG_PREFIX, TagCodec, tags_as_dict

# input field -> (metadata key, API parameter) of an instance restore
_INSTANCE_SETTINGS = {
    "instance_class": ("class", "DBInstanceClass"),
    "subnet_group": ("subnet_group", "DBSubnetGroupName"),
    "security_groups": ("security_groups", "VpcSecurityGroupIds"),
    "parameter_group": ("parameter_group", "DBParameterGroupName"),
    "option_group": ("option_group", "OptionGroupName"),
    "port": ("port", "Port"),
    "storage_type": ("storage_type", "StorageType"),
    "iops": ("iops", "Iops"),
    "multi_az": ("multi_az", "MultiAZ"),
    "iam_auth": ("iam_auth", "EnableIAMDatabaseAuthentication"),
    "availability_zone": ("availability_zone", "AvailabilityZone"),
}
_CLUSTER_SETTINGS = {
    "engine": ("engine", "Engine"),
    "subnet_group": ("subnet_group", "DBSubnetGroupName"),
    "security_groups": ("security_groups", "VpcSecurityGroupIds"),
    "parameter_group": ("parameter_group", "DBClusterParameterGroupName"),
    "port": ("port", "Port"),
    "iam_auth": ("iam_auth", "EnableIAMDatabaseAuthentication"),
    "kms_key_arn": ("kms_key_id", "KmsKeyId"),
}
# what a snapshot without metadata needs from the input (the rest has AWS defaults)
_REQUIRED_WITHOUT_METADATA = {"instance": ("instance_class", "subnet_group", "security_groups"),
                              "cluster": ("instance_class", "subnet_group", "security_groups")}
# settings that name things in the source's VPC/account: they do not exist in another account or region
_PLACE_BOUND = ("subnet_group", "security_groups", "parameter_group", "option_group", "kms_key_arn")


def restore_id_for(execution_name: str | None, started_at: str | None) -> str:
    """``restore-<YYYYMMDDTHHMMSS>-<6 hex>``, stable for one execution."""
    return session_id_for("restore", execution_name, started_at)


def _suffix(restore_id: str) -> str:
    return restore_id.rsplit("-", 1)[-1].lower()


def aside_name(identifier: str, restore_id: str) -> str:
    """``<id>-replaced-<restore>``: where mode "replace" puts the original, within RDS's 63 characters."""
    tail = f"{REPLACED_INFIX}{_suffix(restore_id)}"
    return identifier[: MAX_IDENTIFIER - len(tail)].rstrip("-") + tail


def member_name(recorded: str, source_cluster: str, target_cluster: str) -> str:
    """The restored cluster's name for a recorded instance: the cluster's name swapped in when the
    instance was named after its cluster (``ledger-1`` -> ``ledger-copy-1``), else prefixed with it."""
    if target_cluster == source_cluster:
        return recorded
    if recorded.startswith(source_cluster):
        name = target_cluster + recorded[len(source_cluster):]
    else:
        name = f"{target_cluster}-{recorded}"
    if len(name) > MAX_IDENTIFIER:
        digest = hashlib.sha256(name.encode()).hexdigest()[:6]
        name = f"{name[: MAX_IDENTIFIER - 7].rstrip('-')}-{digest}"
    return name


class _Settings:
    """Collects API parameters and where each setting came from."""

    def __init__(self, target: SnapshotTarget, recorded: dict[str, Any]):
        self.target, self.recorded = target, recorded
        self.parameters: dict[str, Any] = {}
        self.from_metadata: list[str] = []
        self.from_input: list[str] = []

    def take(self, field: str, recorded_key: str, parameter: str) -> None:
        given = getattr(self.target, field)
        if given is not None:
            self.parameters[parameter] = given
            self.from_input.append(field)
        elif self.recorded.get(recorded_key) not in (None, "", []) and not _is_default_group(
                self.recorded[recorded_key]):
            # a default group is what RDS picks anyway (naming it fails where it was never materialised)
            self.parameters[parameter] = self.recorded[recorded_key]
            self.from_metadata.append(field)


def _snapshot(config: RestoreConfig, request: SnapshotRestoreInput,
              restore_id: str) -> tuple[SnapshotInfo, SnapshotApi]:
    region, account, resource_type, name = split_arn(request.snapshot_arn)
    kind = "instance" if resource_type == "snapshot" else "cluster"
    role = config.role_for(account, region, f"snapshot {request.snapshot_arn}")
    rds = aws_sessions.client("rds", region, role, restore_id)
    api = SnapshotApi(rds, kind, f"account {account} region {region}")
    info = api.describe(name)
    if info is None:
        raise SnapshotFailed(f"snapshot {request.snapshot_arn} does not exist (or the restore role cannot see it)")
    if info.status not in READY_STATUSES:
        raise SnapshotFailed(f"snapshot {request.snapshot_arn} is {info.status!r}, not available: it cannot be "
                             "restored yet")
    return info, api


def _metadata(codec: TagCodec, info: SnapshotInfo, api: SnapshotApi) -> dict[str, Any] | None:
    """The verified metadata; None when the snapshot carries no rds-backup tag at all (not made by it).

    Any other problem (altered, moved, other key, parts missing) raises its TagMetadataError: a snapshot
    that claims to be ours but cannot prove it is never restored from its metadata or the input.
    """
    tags = api.tags(info)
    if not any(key.startswith(TAG_PREFIX) for key in tags_as_dict(tags)):
        return None
    return codec.decode(tags, info.arn)


def _user_tags(tags: dict[str, str] | None) -> dict[str, str]:
    return {k: v for k, v in (tags or {}).items() if not k.startswith((TAG_PREFIX, "aws:"))}


def _is_default_group(value: Any) -> bool:
    """RDS's default parameter and option groups (``default.postgres16``, ``default:postgres-16``) exist in
    every account and region."""
    return isinstance(value, str) and value.startswith(("default.", "default:"))


def _check_place_bound(settings: _Settings, source: dict[str, Any], target: Place) -> None:
    if not source or (source.get("account"), source.get("region")) == (target.account, target.region):
        return
    borrowed = [field for field in _PLACE_BOUND if field in settings.from_metadata]
    if borrowed:
        raise SettingsMissing(
            f"the target (account {target.account} region {target.region}) is not where the source was "
            f"(account {source.get('account')} region {source.get('region')}): the recorded {', '.join(borrowed)} "
            "do not exist there; give them in the input's target")


def _plan_instance(request: SnapshotRestoreInput, info: SnapshotInfo, metadata: dict[str, Any] | None,
                   restore_tags: dict[str, str], copying: bool) -> tuple[dict[str, Any], _Settings]:
    recorded = dict((metadata or {}).get("instance") or {})
    settings = _Settings(request.target, recorded)
    for field, (key, parameter) in _INSTANCE_SETTINGS.items():
        settings.take(field, key, parameter)
    if settings.parameters.get("MultiAZ"):
        settings.parameters.pop("AvailabilityZone", None)  # Multi-AZ places the instance itself
    if request.target.kms_key_arn is not None and not copying:
        raise RestoreInputInvalid(
            "target.kms_key_arn: a DB instance is restored under its snapshot's key (in the snapshot's own "
            "account and region); a cluster restore takes kms_key_arn")
    # never public unless the input says so, whatever the source was
    settings.parameters["PubliclyAccessible"] = bool(request.target.publicly_accessible)
    if request.target.publicly_accessible is not None:
        settings.from_input.append("publicly_accessible")
    settings.parameters.update({
        "DBInstanceIdentifier": request.target.identifier,
        # the identifier: the snapshot (or its copy) is in the target's account and region
        "DBSnapshotIdentifier": info.id,
        "Tags": _tag_list(recorded, request.target, restore_tags, settings),
        "DeletionProtection": False,
        "CopyTagsToSnapshot": True,
    })
    return settings.parameters, settings


def _tag_list(recorded: dict[str, Any], target: SnapshotTarget, restore_tags: dict[str, str],
              settings: _Settings) -> list[dict[str, str]]:
    if target.tags is not None:
        tags = dict(target.tags)
        settings.from_input.append("tags")
    else:
        tags = _user_tags(recorded.get("tags"))
        if tags:
            settings.from_metadata.append("tags")
    tags.update(restore_tags)
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def _plan_cluster(request: SnapshotRestoreInput, info: SnapshotInfo, metadata: dict[str, Any] | None,
                  restore_tags: dict[str, str]) -> tuple[dict[str, Any], list[PlannedInstance], _Settings]:
    recorded = dict((metadata or {}).get("cluster") or {})
    if not recorded.get("engine"):
        recorded["engine"] = info.raw.get("Engine")
        recorded["engine_version"] = info.raw.get("EngineVersion")
    settings = _Settings(request.target, recorded)
    for field, (key, parameter) in _CLUSTER_SETTINGS.items():
        settings.take(field, key, parameter)
    if recorded.get("engine_version") and "engine" not in settings.from_input:
        settings.parameters["EngineVersion"] = recorded["engine_version"]
    if recorded.get("serverless_v2_scaling"):
        settings.parameters["ServerlessV2ScalingConfiguration"] = recorded["serverless_v2_scaling"]
        settings.from_metadata.append("serverless_v2_scaling")
    target_id = request.target.identifier
    settings.parameters.update({
        "DBClusterIdentifier": target_id,
        "SnapshotIdentifier": info.id,
        "Tags": _tag_list(recorded, request.target, restore_tags, settings),
        "DeletionProtection": False,
        "CopyTagsToSnapshot": True,
    })
    engine = settings.parameters["Engine"]
    source_cluster = recorded.get("identifier") or info.source_id or target_id
    recorded_instances = list((metadata or {}).get("instances") or [])
    if not recorded_instances:  # no metadata: one writer of the input's class
        recorded_instances = [{"identifier": f"{source_cluster}-1", "writer": True, "promotion_tier": 0}]
    # the recorded writer first (else the lowest promotion tier), then the readers
    recorded_instances.sort(key=lambda i: (not i.get("writer"), i.get("promotion_tier") or 0, i.get("identifier")))
    instances = []
    for number, member in enumerate(recorded_instances):
        identifier = member_name(member["identifier"], source_cluster, target_id)
        parameters: dict[str, Any] = {
            "DBInstanceIdentifier": identifier,
            "DBClusterIdentifier": target_id,
            "Engine": engine,
            "DBInstanceClass": request.target.instance_class or member.get("class"),
            "PubliclyAccessible": bool(request.target.publicly_accessible),
            "Tags": list(settings.parameters["Tags"]),
        }
        if member.get("availability_zone") and not request.target.availability_zone:
            parameters["AvailabilityZone"] = member["availability_zone"]
        elif request.target.availability_zone and number == 0:
            parameters["AvailabilityZone"] = request.target.availability_zone
        parameter_group = request.target.instance_parameter_group or member.get("parameter_group")
        if parameter_group:
            parameters["DBParameterGroupName"] = parameter_group
        if member.get("promotion_tier") is not None:
            parameters["PromotionTier"] = int(member["promotion_tier"])
        instances.append(PlannedInstance(identifier=identifier, parameters=parameters, writer=number == 0,
                                         recorded_identifier=member.get("identifier")))
    if request.target.instance_class:
        settings.from_input.append("instance_class")
    elif metadata:
        settings.from_metadata.append("instance_class")
    for field in ("instance_parameter_group", "availability_zone", "publicly_accessible"):
        if getattr(request.target, field) is not None:
            settings.from_input.append(field)
    if metadata:
        settings.from_metadata += ["instances", "availability_zones", "promotion_tiers"]
    return settings.parameters, instances, settings


def _missing_settings(request: SnapshotRestoreInput, kind: str) -> list[str]:
    return [field for field in _REQUIRED_WITHOUT_METADATA[kind] if getattr(request.target, field) is None]


def _check_target(databases: Databases, plan_kind: str, request: SnapshotRestoreInput,
                  instances: list[PlannedInstance], restore_id: str, replaceable: Replaceable) -> list[Renamed]:
    """Mode new: nothing may exist under the names we will create. Mode replace: the target exists, the
    restore role may rename it (a cluster with its instances) aside and back, and the aside names are free."""
    target_id = request.target.identifier
    existing = databases.find(plan_kind, target_id)
    renames: list[Renamed] = []
    if request.mode == "new":
        if existing is not None and existing.restore_id != restore_id:
            raise TargetExists(f"a DB {plan_kind} named {target_id!r} exists already in {databases.where}: choose "
                               "another target.identifier, or \"mode\": \"replace\" to restore in its place")
    else:
        if existing is None or existing.restore_id == restore_id:
            raise TargetNotFound(f"mode \"replace\": there is no DB {plan_kind} named {target_id!r} in "
                                 f"{databases.where} to replace")
        renames = _renames(existing, restore_id)
        _check_replaceable(databases, existing, renames, replaceable)
        for rename in renames:
            if databases.find(rename.kind, rename.renamed) is not None:
                raise TargetExists(f"mode \"replace\": {rename.renamed!r} (where {rename.original!r} would be put "
                                   f"aside) exists already in {databases.where}")
    aside = {r.original for r in renames}
    for instance in instances:
        found = databases.find("instance", instance.identifier)
        if found is not None and found.identifier not in aside and found.restore_id != restore_id:
            raise TargetExists(f"the restored cluster's instance {instance.identifier!r} exists already in "
                               f"{databases.where}: choose another target.identifier")
    return renames


def _check_replaceable(databases: Databases, existing: Database, renames: list[Renamed],
                       replaceable: Replaceable) -> None:
    """Every rename (the target, a cluster's members; aside and back) is one the restore role may make
    (``rdsbackup_lambdas.restore.replaceable``): refused here, before anything is renamed, rather than by
    IAM half-way through."""
    for number, rename in enumerate(renames):
        found = existing if number == 0 else databases.find(rename.kind, rename.original)
        tags = found.tags if found is not None else {}
        member = f" (an instance of cluster {existing.identifier!r})" if number else ""
        if not replaceable.allows(rename.kind, rename.original, tags):
            how = ("tag the cluster's instances with the policy's selection tags too (IAM checks each instance's "
                   "own tags), or " if number else "")
            raise TargetNotReplaceable(
                f"mode \"replace\": no policy selects DB {rename.kind} {rename.original!r}{member} in "
                f"{databases.where} (by name in selection.resources, or by its selection tags) and no restore made "
                "it, so the restore role may not rename it aside; nothing was changed. Restore with \"mode\": "
                f"\"new\" under another identifier, or {how}add the database to a policy's selection and deploy")
        if not replaceable.allows(rename.kind, rename.renamed, tags):
            raise TargetNotReplaceable(
                f"mode \"replace\": DB {rename.kind} {rename.original!r}{member} would be put aside as "
                f"{rename.renamed!r}, a name the restore role may not rename back after a failure (a database "
                f"selected by name is renamed only to <id>{REPLACED_INFIX}*, and this identifier is cut short "
                "to fit RDS's 63 characters); nothing was changed. Restore with \"mode\": \"new\", or select the "
                "database by tags")


def _renames(existing: Database, restore_id: str) -> list[Renamed]:
    renames = [Renamed(kind=existing.kind, original=existing.identifier,
                       renamed=aside_name(existing.identifier, restore_id))]
    if existing.kind == "instance" and (existing.raw or {}).get("DBClusterIdentifier"):
        raise RestoreInputInvalid(
            f"target {existing.identifier!r} is an instance of Aurora cluster "
            f"{existing.raw['DBClusterIdentifier']!r}: restore the cluster snapshot in place of the cluster")
    renames += [Renamed(kind="instance", original=member, renamed=aside_name(member, restore_id))
                for member in existing.members]
    return renames


def _copy_across(config: RestoreConfig, request: SnapshotRestoreInput, info: SnapshotInfo, target: Place,
                 restore_id: str) -> SnapshotCopy | None:
    """A copy of the snapshot in the target's account/region, when that is not where the snapshot is."""
    if (target.account, target.region) == (info.account, info.region):
        return None
    if info.encrypted and not request.target.kms_key_arn:
        raise SettingsMissing(
            f"the snapshot is encrypted and in account {info.account} region {info.region}: give target.kms_key_arn, "
            f"a key of account {target.account} in {target.region} to re-encrypt its copy with (the source's key "
            "must allow that account to use it through RDS)")
    copy_id = f"rdsbackup-restore-{_suffix(restore_id)}-{info.id}"[:255].rstrip("-")
    return SnapshotCopy(
        source_arn=info.arn, source_id=info.id, source_account=info.account, source_region=info.region,
        source_role_arn=config.role_for(info.account, info.region, f"snapshot {info.arn}"), copy_id=copy_id,
        kms_key_id=request.target.kms_key_arn if info.encrypted else None, shared=info.account != target.account)


def plan_restore(request: SnapshotRestoreInput, config: RestoreConfig, codec: TagCodec, *, policies: dict[str, Any],
                 execution_name: str | None, started_at: str | None) -> dict[str, Any]:
    """The plan of a snapshot restore (see :class:`Plan`), or the reason it cannot be done. ``policies``
    (the shipped ones) say which databases mode "replace" may rename."""
    restore_id = restore_id_for(execution_name, started_at)
    info, api = _snapshot(config, request, restore_id)
    metadata = _metadata(codec, info, api)
    if metadata is None and (missing := _missing_settings(request, info.kind)):
        raise SettingsMissing(
            f"snapshot {info.arn} was not made by rds-backup (it has no metadata tags): give every setting in the "
            f"input's target; missing: {', '.join(missing)}")
    target = Place(account=request.target.account or info.account, region=request.target.region or info.region)
    target = target.model_copy(update={"role_arn": config.role_for(target.account, target.region, "the target")})
    copy_across = _copy_across(config, request, info, target, restore_id)
    restore_tags = {RESTORE_TAG: restore_id}
    instances: list[PlannedInstance] = []
    if info.kind == "instance":
        parameters, settings = _plan_instance(request, info, metadata, restore_tags, copy_across is not None)
    else:
        parameters, instances, settings = _plan_cluster(request, info, metadata, restore_tags)
    if copy_across is not None:  # restored from the copy in the target's place
        parameters["DBSnapshotIdentifier" if info.kind == "instance" else "SnapshotIdentifier"] = copy_across.copy_id
    source = dict((metadata or {}).get("source") or {})
    _check_place_bound(settings, source, target)
    rds = aws_sessions.client("rds", target.region, target.role_arn, restore_id)
    databases = Databases(rds, f"account {target.account} region {target.region}")
    renames = _check_target(databases, info.kind, request, instances, restore_id,
                            Replaceable.in_place(policies, target.account, target.region))
    plan = Plan(
        restore_id=restore_id, kind=info.kind, mode=request.mode, keep_on_failure=request.keep_on_failure,
        snapshot_arn=info.arn, snapshot_id=info.id, source=source, target=target,
        target_identifier=request.target.identifier, restore_parameters=parameters, instances=instances,
        renames=renames, copy_across=copy_across, settings_from_metadata=sorted(set(settings.from_metadata)),
        settings_from_input=sorted(set(settings.from_input)), metadata_verified=metadata is not None,
        wait=config.wait, started_at=started_at,
    )
    logger.info("restore planned", extra={"restore_id": restore_id, "kind": info.kind, "mode": request.mode,
                                          "instances": len(instances), "renames": len(renames)})
    return plan.model_dump()
