"""Snapshot retention: keep the last N snapshots this tool made for a source (and per replica target).

A snapshot is ours only if its encrypted metadata decodes with our key and is bound to that snapshot:
the plaintext ``rdsbackup:managed`` marker alone is never trusted, so a forged or copied marker never
makes a snapshot deletable. Snapshots are grouped by (source ARN, policy, kind): two policies backing
up the same source keep their own chains. The current session's snapshots are never deleted, and
count as one of the N. Staging copies that a crashed session left behind are removed too.

A database deleted and created again under its name has a new resource id (``DbiResourceId`` /
``DbClusterResourceId``, which every snapshot records): its snapshots start a new chain. The old
database's snapshots are neither counted nor deleted (nothing of a database that no longer exists is
ever deleted by a count of another's), and a warning names them each session (the session report sends
warnings to SNS) until someone deletes them by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from rdsbackup_lambdas import aws_sessions, powers
from rdsbackup_lambdas.errors import RdsBackupError, TagMetadataError
from rdsbackup_lambdas.metadata_binding import resource_id, trusted_metadata
from rdsbackup_lambdas.models import Item
from rdsbackup_lambdas.observability import logger
from rdsbackup_lambdas.snapshot_steps import where
from rdsbackup_lambdas.snapshots import READY_STATUSES, SnapshotApi, SnapshotInfo
from rdsbackup_lambdas.tag_metadata import TagCodec, is_marked_managed


@dataclass
class PruneResult:
    deleted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    staging_deleted: list[str] = field(default_factory=list)
    skipped_unmanaged: int = 0
    rejected_tags: int = 0
    warnings: list[str] = field(default_factory=list)


def _sort_key(entry: tuple[dict[str, Any], SnapshotInfo]) -> tuple[str, str]:
    metadata, info = entry
    created = info.created.isoformat() if info.created else ""
    return (str(metadata.get("created_at") or ""), created)


def prune(
    api: SnapshotApi, codec: TagCodec, *, source_id: str, source_arn: str, policy: str, kind: str, keep: int,
    current_arns: set[str], session_id: str, min_age_seconds: int = 0,
) -> PruneResult:
    """Delete the oldest ``kind`` snapshots of ``source_arn`` beyond ``keep`` that ``api`` can see."""
    result = PruneResult()
    chain: list[tuple[dict[str, Any], SnapshotInfo]] = []
    current_resource: str | None = None
    current = {a.lower() for a in current_arns}
    for info in api.list_manual(source_id):
        tags = api.tags(info)
        if not is_marked_managed(tags):
            result.skipped_unmanaged += 1
            continue
        try:
            metadata = trusted_metadata(api, codec, info, tags)
        except TagMetadataError as exc:
            # A marker without valid metadata: forged, altered or copied. Never ours to delete.
            result.rejected_tags += 1
            result.skipped_unmanaged += 1
            logger.warning("snapshot has an rds-backup marker but untrusted metadata; left alone",
                           extra={"snapshot_arn": info.arn, "error": type(exc).__name__, "detail": str(exc)})
            continue
        source = metadata.get("source") or {}
        if source.get("arn") != source_arn or metadata.get("policy") != policy:
            continue  # another source's or another policy's chain
        is_current = info.arn.lower() in current or metadata.get("session_id") == session_id
        if metadata.get("kind") == "staging":
            if not is_current and _delete(api, info, result):
                result.staging_deleted.append(info.arn)
            continue
        if metadata.get("kind") != kind:
            continue
        if is_current:
            result.kept.append(info.arn)
            current_resource = current_resource or resource_id(info)
        else:
            chain.append((metadata, info))
    chain = _without_old_chains(chain, current_resource, result, source_arn=source_arn, kind=kind)
    chain.sort(key=_sort_key, reverse=True)
    room = max(0, keep - 1)  # the current session's snapshot is one of the N, listed or not yet
    for _, info in chain[:room]:
        result.kept.append(info.arn)
    youngest_deletable = datetime.now(UTC) - timedelta(seconds=min_age_seconds)
    for _, info in chain[room:]:
        if info.created is not None and info.created > youngest_deletable:
            # younger than the policy's minimum age: a burst of sessions must not flush history
            result.kept.append(info.arn)
            continue
        if _delete(api, info, result):
            result.deleted.append(info.arn)
        else:
            result.kept.append(info.arn)
    return result


Chain = list[tuple[dict[str, Any], SnapshotInfo]]


def _without_old_chains(chain: Chain, current_resource: str | None, result: PruneResult, *, source_arn: str,
                        kind: str) -> Chain:
    """The chain of the database the current snapshot was taken from; older databases' snapshots of the
    same name are kept (and reported), not counted."""
    if current_resource is None:
        return chain
    old: dict[str, list[str]] = {}
    for _, info in chain:
        if resource_id(info) not in (None, current_resource):
            old.setdefault(str(resource_id(info)), []).append(info.arn)
    for resource, arns in sorted(old.items()):
        result.kept.extend(arns)
        result.warnings.append(
            f"{source_arn} was recreated: {len(arns)} {kind} snapshot(s) of the earlier database (resource "
            f"{resource}) are kept outside retention; delete them by hand once they are no longer needed")
    return [(m, info) for m, info in chain if resource_id(info) in (None, current_resource)]


def _delete(api: SnapshotApi, info: SnapshotInfo, result: PruneResult) -> bool:
    if info.status not in READY_STATUSES:
        result.warnings.append(f"{info.arn} is {info.status!r}; not deleted this time")
        return False
    try:
        api.delete(info.id)
    except RdsBackupError as exc:
        result.warnings.append(f"could not delete {info.arn}: {exc}")
        return False
    except Exception as exc:  # one snapshot's failure must not stop the rest of retention
        result.warnings.append(f"could not delete {info.arn}: {exc}")
        return False
    logger.info("retention deleted snapshot", extra={"snapshot_arn": info.arn})
    return True


def apply_retention(item: Item, codec: TagCodec) -> dict[str, Any]:
    """Retention of the primary chain in the source account/region, and of the replica chain."""
    ref = item.require_snapshot()
    res = item.resource
    sid = item.session_id
    delete_role = powers.role_for(item.access_role_arn, powers.DELETE)
    src_api = SnapshotApi(aws_sessions.client("rds", res.region, delete_role, sid), res.kind,
                          where(res.account, res.region))
    common = {"source_id": res.id, "source_arn": res.arn, "policy": item.policy, "session_id": sid,
              "min_age_seconds": item.retention_min_age_seconds}
    primary = prune(src_api, codec, kind="primary", keep=item.snapshot_retention, current_arns={ref.arn}, **common)
    replica = PruneResult()
    rep = item.replication
    replica_arn = item.replica.arn if item.replica else None
    if rep is not None and replica_arn:
        target_role = powers.role_for(rep.access_role_arn, powers.REPLICA_DELETE) or delete_role
        target_api = SnapshotApi(aws_sessions.client("rds", rep.region, target_role, sid), res.kind,
                                 where(rep.account, rep.region))
        replica = prune(target_api, codec, kind="replica", keep=rep.retention, current_arns={replica_arn}, **common)
        if rep.account != res.account and rep.region != res.region:
            # Staging copies of a region+account chain live in the source account, target region.
            staging_role = powers.role_for(item.access_role_arn, powers.DELETE, rep.region)
            staging_api = SnapshotApi(aws_sessions.client("rds", rep.region, staging_role, sid), res.kind,
                                      where(res.account, rep.region))
            leftovers = prune(staging_api, codec, kind="staging-only", keep=1, current_arns=set(), **common)
            replica.staging_deleted += leftovers.staging_deleted
            replica.warnings += leftovers.warnings
    elif rep is not None:
        replica.warnings.append("no replica in this session; replica retention skipped")
    return {
        "deleted": primary.deleted,
        "kept": primary.kept,
        "replica_deleted": replica.deleted,
        "replica_kept": replica.kept,
        "staging_deleted": primary.staging_deleted + replica.staging_deleted,
        "skipped_unmanaged": primary.skipped_unmanaged + replica.skipped_unmanaged,
        "rejected_tags": primary.rejected_tags + replica.rejected_tags,
        "warnings": primary.warnings + replica.warnings,
    }
