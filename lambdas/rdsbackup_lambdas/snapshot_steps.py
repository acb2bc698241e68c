"""The primary snapshot's steps: create it, wait for it, tag it with encrypted metadata."""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas import aws_sessions, powers, quotas, slots
from rdsbackup_lambdas.clock import now_iso
from rdsbackup_lambdas.config import SlotConfig
from rdsbackup_lambdas.errors import SlotWaitTimeout, SnapshotFailed, SnapshotWaitTimeout, SourceNotFound
from rdsbackup_lambdas.metadata_binding import binding_of
from rdsbackup_lambdas.models import Item, PendingSnapshot, SnapshotRef
from rdsbackup_lambdas.naming import snapshot_name
from rdsbackup_lambdas.observability import MetricUnit, logger, metrics
from rdsbackup_lambdas.polling import next_poll
from rdsbackup_lambdas.snapshots import (
    READY_STATUSES,
    SnapshotApi,
    SnapshotInfo,
    describe_cluster,
    describe_instance,
    is_failed_status,
    source_metadata,
)
from rdsbackup_lambdas.tag_metadata import MANAGED_KEY, MANAGED_VALUE, TagCodec, plan_tags

MANAGED_TAGS = [{"Key": MANAGED_KEY, "Value": MANAGED_VALUE}]


def where(account: str, region: str) -> str:
    return f"account {account} region {region}"


def source_rds(item: Item, power: str) -> Any:
    """RDS in the source's account and region, through the role of ``power`` (rdsbackup_lambdas.powers)."""
    return aws_sessions.client("rds", item.resource.region, powers.role_for(item.access_role_arn, power),
                               item.session_id)


def primary_name(item: Item) -> str:
    return snapshot_name(item.policy, item.resource.id, item.session_id)


def slot_holder(item: Item) -> str:
    return slots.holder_name(item.session_id, item.resource.arn)


def slot_hold_seconds(item: Item) -> int:
    """A holder that never gives its slot back (its execution died) loses it after this long."""
    return item.wait.timeout_seconds + 3600


def create_snapshot(item: Item, slot_config: SlotConfig) -> dict[str, Any]:
    """Create the session's snapshot of the resource, or find the one a previous try made.

    Before creating: the manual-snapshot quota must have room (else ``ManualSnapshotQuotaFull`` at
    once), and a snapshot slot of the account-region must be free (else ``{"started": false, ...}``
    with the next wait, until ``wait.slot_timeout_seconds``: then ``SlotWaitTimeout``).
    """
    res = item.resource
    rds = source_rds(item, powers.SNAPSHOT)
    api = SnapshotApi(rds, res.kind, where(res.account, res.region))
    name = primary_name(item)
    existing = api.describe(name)
    if existing is None:
        # Describe first: a clear SourceNotFound, and the source must be there for the tags later.
        if res.kind == "instance":
            db = describe_instance(rds, res.id, api.where)
            if db.get("DBClusterIdentifier"):
                raise SourceNotFound(
                    f"DB instance {res.id!r} is a member of Aurora cluster {db['DBClusterIdentifier']!r}: "
                    "back up the cluster instead"
                )
        else:
            describe_cluster(rds, res.id, api.where)
        quotas.require_room(rds, res.kind, api.where)
        limit = slot_config.limits.limit(slots.SNAPSHOT, res.account, res.region)
        taken = slots.acquire(slot_config.table_name, slots.SNAPSHOT, res.account, res.region, slot_holder(item),
                              limit=limit, hold_seconds=slot_hold_seconds(item))
        if taken is None:
            previous = item.snapshot if isinstance(item.snapshot, PendingSnapshot) else None
            poll = next_poll(previous, item.wait.for_slots(), ready=False, timeout_error=SlotWaitTimeout,
                             what=f"a free snapshot slot in {api.where} (limit {limit} snapshot creations at once)")
            return {"started": False, **poll}
        info = api.create(name, res.id, MANAGED_TAGS)
        existed = False
        metrics.add_metric(name="SnapshotsCreated", unit=MetricUnit.Count, value=1)
        logger.info("snapshot creation started", extra={"snapshot_id": name, "snapshot_arn": info.arn})
    else:
        _check_is_ours(existing, item)
        info, existed = existing, True
        logger.info("snapshot already exists (retry)", extra={"snapshot_id": name, "status": info.status})
    return {**info.ref().model_dump(), "status": info.status, "existed": existed, "started": True}


def _check_is_ours(info: SnapshotInfo, item: Item) -> None:
    if info.source_id and info.source_id.lower() != item.resource.id.lower():
        raise SnapshotFailed(
            f"snapshot {info.id!r} exists but is of {info.source_id!r}, not {item.resource.id!r}; the name is taken"
        )


def release_snapshot_slot(item: Item, slot_config: SlotConfig) -> bool:
    res = item.resource
    return slots.release(slot_config.table_name, slots.SNAPSHOT, res.account, res.region, slot_holder(item))


def check_snapshot(item: Item, slot_config: SlotConfig) -> dict[str, Any]:
    """One poll of the snapshot's status: ready, not yet (with the next wait), or failed/timed out.

    The snapshot slot is given back once the snapshot is available or has failed."""
    ref = item.require_snapshot()
    api = SnapshotApi(source_rds(item, powers.READ), ref.kind, where(ref.account, ref.region))
    info = api.describe(ref.id)
    if info is None or is_failed_status(info.status):
        release_snapshot_slot(item, slot_config)
        if info is None:
            raise SnapshotFailed(f"snapshot {ref.arn} disappeared while waiting for it to become available")
        raise SnapshotFailed(f"snapshot {ref.arn} is {info.status!r}; RDS could not make it")
    ready = info.status in READY_STATUSES
    if ready:
        release_snapshot_slot(item, slot_config)
    poll = next_poll(item.snapshot_wait, item.wait, ready=ready, timeout_error=SnapshotWaitTimeout,
                     what=f"snapshot {ref.arn} (status {info.status!r})")
    if ready:
        metrics.add_metric(name="DurationSeconds", unit=MetricUnit.Seconds, value=poll["waited_seconds"])
    progress = info.raw.get("PercentProgress")
    return {"ready": ready, **poll, "status": info.status, "percent_progress": progress}


def tag_codec(key_arn: str) -> TagCodec:
    region = key_arn.split(":")[3]
    return TagCodec(aws_sessions.client("kms", region), key_arn)


def primary_metadata(item: Item, ref: SnapshotRef, source: dict[str, Any],
                     binding: dict[str, Any] | None = None) -> dict[str, Any]:
    res = item.resource
    return {
        # the snapshot's creation time and source resource id (rdsbackup_lambdas.metadata_binding)
        "binding": binding or {},
        "format": 1,
        "tool": "rds-backup",
        "kind": "primary",
        "policy": item.policy,
        "session_id": item.session_id,
        "created_at": now_iso(),
        "snapshot": {"arn": ref.arn, "id": ref.id, "kind": ref.kind, "account": ref.account, "region": ref.region,
                     "encrypted": ref.encrypted, "kms_key_id": ref.kms_key_id},
        "source": {"arn": res.arn, "id": res.id, "kind": res.kind, "engine": res.engine, "account": res.account,
                   "region": res.region},
        **source,
    }


def write_tags(api: SnapshotApi, info: SnapshotInfo, codec: TagCodec, metadata: dict[str, Any]) -> int:
    """Encode ``metadata`` for ``info`` and put it on the snapshot within AWS's limits. Returns our tag count."""
    existing = api.tags(info)
    user_tags = [t for t in existing if not t["Key"].startswith("rdsbackup:")]
    ours = codec.encode(metadata, info.arn, max_tags=50 - len(user_tags))
    add, remove = plan_tags(existing, ours, info.arn)
    api.replace_tags(info.arn, add, remove)
    return len(ours)


def tag_snapshot(item: Item, codec: TagCodec) -> dict[str, Any]:
    """Tag the primary snapshot with the encrypted metadata of the source."""
    ref = item.require_snapshot()
    rds = source_rds(item, powers.SNAPSHOT)
    api = SnapshotApi(rds, ref.kind, where(ref.account, ref.region))
    info = api.describe(ref.id)
    if info is None:
        raise SnapshotFailed(f"snapshot {ref.arn} disappeared before it could be tagged")
    source = source_metadata(rds, item.resource.kind, item.resource.id, api.where)
    count = write_tags(api, info, codec, primary_metadata(item, info.ref(), source, binding_of(info)))
    instances = len(source.get("instances", [])) if item.resource.kind == "cluster" else 1
    logger.info("snapshot tagged", extra={"tag_count": count, "instances_recorded": instances})
    return {"tag_count": count, "instances_recorded": instances}
