"""The actions of a snapshot restore and the check of its Wait/Choice loops.

Every action is idempotent (Step Functions retries re-invoke it): what exists already under a planned
name and carries this restore's tag is taken as made by an earlier try; anything else under that name
is refused. Each action returns ``{"stage": ..., "ready": false}`` and ``check_restore`` polls that
stage until every resource it covers is available (RDS answers ``creating``, ``modifying``,
``renaming``, ``backing-up`` ... first; the handlers never assume a resource is ready at once).
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas import aws_sessions
from rdsbackup_lambdas.errors import DBNotAvailable, RestoreFailed, RestoreWaitTimeout, TargetExists
from rdsbackup_lambdas.observability import logger
from rdsbackup_lambdas.polling import next_poll
from rdsbackup_lambdas.restore.databases import (
    AVAILABLE,
    FAILED_STATUSES,
    LEFTOVER_TAG,
    RESTORE_TAG,
    Database,
    Databases,
)
from rdsbackup_lambdas.restore.models import CleanupState, Plan, StepState
from rdsbackup_lambdas.snapshots import SnapshotApi, is_failed_status

COPIED, RENAMED, RESTORED, WRITER, READERS = "copied", "renamed", "restored", "writer", "readers"


def target_databases(plan: Plan) -> Databases:
    rds = aws_sessions.client("rds", plan.target.region, plan.target.role_arn, plan.restore_id)
    return Databases(rds, f"account {plan.target.account} region {plan.target.region}")


def _started(stage: str) -> dict[str, Any]:
    return StepState(stage=stage).model_dump()


def _ours(found: Database, plan: Plan, what: str) -> None:
    if found.restore_id != plan.restore_id:
        raise TargetExists(f"{what} {found.identifier!r} appeared in {plan.target.account}/{plan.target.region} "
                           f"and was not made by this restore ({plan.restore_id}); nothing of it is touched")


def _snapshot_api(plan: Plan, *, source: bool) -> SnapshotApi:
    copy = plan.copy_across
    assert copy is not None
    account, region, role = ((copy.source_account, copy.source_region, copy.source_role_arn) if source
                             else (plan.target.account, plan.target.region, plan.target.role_arn))
    return SnapshotApi(aws_sessions.client("rds", region, role, plan.restore_id), plan.kind,
                       f"account {account} region {region}")


def copy_snapshot(plan: Plan) -> dict[str, Any]:
    """Copy the snapshot into the target's account/region (shared with that account first), re-encrypted
    with the target's key; a retry finds the copy the first try started."""
    copy = plan.copy_across
    assert copy is not None, "copy_snapshot runs only for a plan with copy_across"
    if copy.shared:
        _snapshot_api(plan, source=True).set_shared(copy.source_id, plan.target.account, True)
    _snapshot_api(plan, source=False).copy(
        copy.source_arn, copy.copy_id, kms_key_id=copy.kms_key_id, source_region=copy.source_region,
        tags=[{"Key": RESTORE_TAG, "Value": plan.restore_id}])
    logger.info("snapshot copy started", extra={"source": copy.source_arn, "copy": copy.copy_id})
    return _started(COPIED)


def remove_copy(plan: Plan) -> list[str]:
    """Delete the restore's copy and withdraw the share; what was removed."""
    copy = plan.copy_across
    if copy is None:
        return []
    removed = []
    if _snapshot_api(plan, source=False).delete(copy.copy_id):
        removed.append(f"snapshot copy {copy.copy_id}")
    if copy.shared:
        _snapshot_api(plan, source=True).set_shared(copy.source_id, plan.target.account, False)
        removed.append(f"share of {copy.source_id} with {plan.target.account}")
    return removed


def rename_original(plan: Plan) -> dict[str, Any]:
    """Mode replace: rename the existing instance (or cluster and its instances) to ``<id>-replaced-<restore>``."""
    databases = target_databases(plan)
    for rename in plan.renames:
        if databases.find(rename.kind, rename.renamed) is not None:
            continue  # an earlier try renamed it
        found = databases.find(rename.kind, rename.original)
        if found is None:
            raise RestoreFailed(f"{rename.original!r} disappeared before it could be renamed aside")
        databases.rename(rename.kind, rename.original, rename.renamed)
        logger.info("renamed aside", extra={"original": rename.original, "renamed": rename.renamed})
    return _started(RENAMED)


def restore_snapshot(plan: Plan) -> dict[str, Any]:
    """Start the restore of the snapshot as the target instance or cluster (its instances come after)."""
    databases = target_databases(plan)
    if not databases.restore(plan.kind, plan.restore_parameters):
        found = databases.find(plan.kind, plan.target_identifier)
        if found is not None:
            _ours(found, plan, f"DB {plan.kind}")
    logger.info("restore started", extra={"kind": plan.kind, "target": plan.target_identifier})
    return _started(RESTORED)


def create_instances(plan: Plan, which: str) -> dict[str, Any]:
    """Create the cluster's writer, or all of its readers side by side (RDS builds them in parallel)."""
    databases = target_databases(plan)
    chosen = [plan.writer] if which == WRITER else plan.readers
    for instance in chosen:
        if instance is None:
            continue
        if not databases.create_member(instance.parameters):
            found = databases.find("instance", instance.identifier)
            if found is not None:
                _ours(found, plan, "DB instance")
    logger.info("cluster instances started", extra={"which": which, "count": len(chosen)})
    return _started(which)


def _expected(plan: Plan, stage: str) -> list[tuple[str, str]]:
    if stage == COPIED:
        return []
    if stage == RENAMED:
        return [(r.kind, r.renamed) for r in plan.renames]
    if stage == RESTORED:
        return [(plan.kind, plan.target_identifier)]
    if stage == WRITER:
        return [("instance", plan.writer.identifier)] if plan.writer else []
    return [("instance", i.identifier) for i in plan.instances]


def _check_copy(plan: Plan) -> dict[str, str]:
    assert plan.copy_across is not None
    found = _snapshot_api(plan, source=False).describe(plan.copy_across.copy_id)
    if found is None or is_failed_status(found.status):
        raise RestoreFailed(f"the copy {plan.copy_across.copy_id} of {plan.snapshot_arn} in "
                            f"{plan.target.account}/{plan.target.region} is "
                            f"{found.status if found else 'gone'}: RDS could not copy it")
    return {plan.copy_across.copy_id: found.status}


def check_restore(plan: Plan, step: StepState) -> dict[str, Any]:
    """One poll of the resources the last action covers: ready when all are available."""
    databases = target_databases(plan)
    statuses: dict[str, str] = _check_copy(plan) if step.stage == COPIED else {}
    for kind, identifier in _expected(plan, step.stage):
        found = databases.find(kind, identifier)
        if found is None:
            if step.stage == RENAMED:  # RDS shows the new name only once the rename is applied
                statuses[identifier] = "renaming"
                continue
            raise RestoreFailed(f"DB {kind} {identifier!r} disappeared while it was being restored")
        if found.status in FAILED_STATUSES:
            raise RestoreFailed(f"DB {kind} {identifier!r} is {found.status!r}: RDS could not restore it")
        statuses[identifier] = found.status
    ready = all(status == AVAILABLE for status in statuses.values())
    poll = next_poll(step, plan.wait, ready=ready, timeout_error=RestoreWaitTimeout,
                     what=f"the restore's {step.stage} stage ({statuses})")
    return {"stage": step.stage, "ready": ready, **poll, "statuses": statuses}


# -- cleanup after a failure ---------------------------------------------------------------------------


def _created(plan: Plan) -> list[tuple[str, str]]:
    """What this restore may have made, in deletion order: instances, then the cluster."""
    members = [("instance", i.identifier) for i in reversed(plan.instances)]
    return [*members, (plan.kind, plan.target_identifier)] if plan.kind == "cluster" else [
        ("instance", plan.target_identifier)]


def cleanup_restore(plan: Plan | None, previous: CleanupState | None) -> dict[str, Any]:
    """Delete what this restore created (no final snapshot), then rename the original back (mode replace).

    One call makes what progress it can and says whether it is done; the state machine waits and calls
    again (deletion and renaming take minutes in RDS). Only resources carrying this restore's tag are
    deleted. What cannot be deleted is tagged ``rdsbackup:sweep`` and reported; past the wait timeout the
    cleanup stops and reports what is left instead of failing.
    """
    state = previous or CleanupState()
    if plan is None:
        return {**state.model_dump(), "done": True}
    databases = target_databases(plan)
    deleted, left, kept, warnings = (list(state.deleted), list(state.left_for_sweeper), list(state.kept),
                                     list(state.warnings))
    deleting: list[str] = []
    pending: list[str] = []
    for kind, identifier in _created(plan):
        entry = f"{kind} {identifier}"
        found = databases.find(kind, identifier)
        if found is None:
            if entry in state.deleting and entry not in deleted:
                deleted.append(entry)
            continue
        if found.restore_id != plan.restore_id:
            continue  # not ours (the original, or someone else's): never touched
        if plan.keep_on_failure:
            kept.append(entry)
            continue
        if entry in left:
            continue
        pending.append(entry)
        if found.status == "deleting":
            deleting.append(entry)
            continue
        if kind == "cluster" and found.members:
            continue  # its instances are still being deleted
        try:
            databases.delete(kind, identifier)
            deleting.append(entry)
        except DBNotAvailable as exc:  # e.g. still creating or modifying: tried again on the next call
            logger.info("not deletable yet", extra={"identifier": identifier, "reason": str(exc)})
        except Exception as exc:
            pending.remove(entry)
            _leave_for_sweeper(databases, found, plan, left, warnings, exc)
    renamed_back = list(state.renamed_back)
    if not pending and not plan.keep_on_failure:
        renamed_back = _rename_back(databases, plan, renamed_back, pending)
        try:
            deleted += [entry for entry in remove_copy(plan) if entry not in deleted]
        except Exception as exc:
            warnings.append(f"could not remove the snapshot copy: {type(exc).__name__}: {exc}")
    ready = not pending
    try:
        poll = next_poll(state, plan.wait, ready=ready, timeout_error=RestoreWaitTimeout, what="the cleanup")
    except RestoreWaitTimeout as exc:
        for entry in pending:
            kind, identifier = entry.split(" ", 1)
            found = databases.find(kind, identifier)
            if found is not None and found.restore_id == plan.restore_id:
                _leave_for_sweeper(databases, found, plan, left, warnings, exc)
            elif found is None or found.status != AVAILABLE:
                warnings.append(f"{entry} is not back (status {found.status if found else 'missing'}) after the "
                                "cleanup's wait timeout")
        poll, ready = {"attempt": state.attempt + 1, "wait_seconds": 0, "waited_seconds": state.waited_seconds}, True
    return CleanupState(done=ready, deleted=deleted, deleting=deleting, renamed_back=renamed_back,
                        left_for_sweeper=left, kept=sorted(set(kept)), warnings=warnings, pending=pending,
                        **poll).model_dump()


def _rename_back(databases: Databases, plan: Plan, done: list[str], pending: list[str]) -> list[str]:
    for rename in plan.renames:
        if rename.original in done:
            continue
        original = databases.find(rename.kind, rename.original)
        if original is not None:
            if original.status == AVAILABLE:
                done.append(rename.original)
            else:
                pending.append(f"{rename.kind} {rename.original}")
            continue
        aside = databases.find(rename.kind, rename.renamed)
        if aside is None:
            raise RestoreFailed(f"neither {rename.original!r} nor {rename.renamed!r} exists: cannot rename the "
                                "original back")
        if aside.status == "renaming":  # an earlier call's rename is being applied
            pending.append(f"{rename.kind} {rename.original}")
            continue
        databases.rename(rename.kind, rename.renamed, rename.original)
        pending.append(f"{rename.kind} {rename.original}")
        logger.info("renamed back", extra={"renamed": rename.renamed, "original": rename.original})
    return done


def _leave_for_sweeper(databases: Databases, found: Database, plan: Plan, left: list[str], warnings: list[str],
                       exc: Exception) -> None:
    entry = f"{found.kind} {found.identifier}"
    try:
        databases.tag(found.arn, {LEFTOVER_TAG: "true"})
    except Exception as tag_exc:
        warnings.append(f"could not tag {entry} for the sweeper: {tag_exc}")
    if entry not in left:
        left.append(entry)
    warnings.append(f"could not delete {entry} ({type(exc).__name__}: {exc}); tagged {LEFTOVER_TAG}=true")
