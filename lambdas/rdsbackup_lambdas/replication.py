"""Replication of a snapshot to another region and/or account, as a reconciler.

Each call of :func:`replicate_snapshot` looks at what exists (every name derives from the session, so
a retry finds its own work), does the next steps that can be done now, and returns; the state
machine calls again after ``wait_seconds`` until ``done``. Phases, as the target needs them:

``stage``   cross-account only, when the snapshot cannot be shared as it is: it is on the default
            ``aws/rds`` key (AWS refuses to share those) or the target is also in another region
            (an encrypted shared snapshot can only be copied in its own region). The snapshot is
            copied, in the source account, to a customer-managed key (``staging_kms_key_arn`` of the
            item for the same region, of the replication for the target region).
``share``   cross-account only: add the target account to the restore attribute of the snapshot
            (the staging copy, or the snapshot itself when it is unencrypted or on a CMK).
``copy``    in the target account and region, through the target role, with ``KmsKeyId`` = the
            target key (``SourceRegion`` when the region differs).
``tag``     encrypted metadata on the replica (the primary's metadata, re-bound to the replica).
``cleanup`` unshare, and delete the staging copy once the target has its copy.

Every copy (staging or replica) first checks the destination's manual-snapshot quota (a full one fails
at once: ``ManualSnapshotQuotaFull``), then takes a copy slot of its destination account-region
(``slots.py``: 20 copies in progress per destination region by default, shared by every session);
while none is free the pass returns ``phase`` ``copy-slot`` and the state machine waits. The slot is
given back once the copy is available (``release_lease`` gives back whatever a failed resource held).

Unencrypted Aurora cluster snapshots: AWS refuses ``KmsKeyId`` when copying an unencrypted DB cluster
snapshot, so such a replica is copied unencrypted (as its source) and the result carries a warning,
rather than failing a backup that would otherwise succeed. Unencrypted instance snapshots are
encrypted on copy when a key is given.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from rdsbackup_lambdas import aws_sessions, powers, quotas, slots
from rdsbackup_lambdas.clock import now_iso
from rdsbackup_lambdas.config import SlotConfig
from rdsbackup_lambdas.errors import (
    ReplicationNotPossible,
    ReplicationTargetNotConfigured,
    ReplicationTimeout,
    SnapshotFailed,
)
from rdsbackup_lambdas.metadata_binding import binding_of, trusted_metadata
from rdsbackup_lambdas.models import Item, ReplicaState, Replication
from rdsbackup_lambdas.naming import snapshot_name
from rdsbackup_lambdas.observability import MetricUnit, logger, metrics
from rdsbackup_lambdas.polling import next_poll
from rdsbackup_lambdas.snapshot_steps import (
    MANAGED_TAGS,
    primary_name,
    slot_hold_seconds,
    slot_holder,
    where,
    write_tags,
)
from rdsbackup_lambdas.snapshots import READY_STATUSES, SnapshotApi, SnapshotInfo, is_failed_status
from rdsbackup_lambdas.tag_metadata import HEADER_KEY, TagCodec, tags_as_dict


def is_customer_managed_key(kms: Any, key_id: str | None) -> bool:
    """Whether ``key_id`` is a customer-managed KMS key (so a snapshot encrypted with it can be shared).

    Anything else (the AWS-managed ``aws/rds`` key, or a key we cannot describe) is treated as not
    shareable: the snapshot is staged to a CMK first, which is always safe.
    """
    if not key_id:
        return False
    try:
        meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    except ClientError as exc:
        logger.info("cannot describe snapshot key; staging to a CMK", extra={"key": key_id, "error": str(exc)})
        return False
    return meta.get("KeyManager") == "CUSTOMER"


def copy_destinations(item: Item) -> list[tuple[str, str]]:
    """Every (account, region) a copy of this resource may go to: the staging place and the target."""
    rep = item.replication
    if rep is None:
        return []
    res = item.resource
    target = (rep.account or res.account, rep.region or res.region)
    return sorted({(res.account, target[1]), target} - {(res.account, res.region)})


class _Reconciler:
    def __init__(self, item: Item, codec: TagCodec, slot_config: SlotConfig):
        rep = item.replication
        assert rep is not None
        self.item, self.rep, self.codec, self.slot_config = item, rep, codec, slot_config
        self.src = item.require_snapshot()
        self.target_account = rep.account or self.src.account
        self.target_region = rep.region or self.src.region
        self.cross_account = self.target_account != self.src.account
        self.cross_region = self.target_region != self.src.region
        prev = item.replica
        self.prev = prev if prev and prev.attempt > 0 else None
        self.steps: list[str] = list(prev.steps) if self.prev else []
        self.warnings: list[str] = list(prev.warnings) if self.prev else []
        self.name = primary_name(item)
        self.staging_name = snapshot_name(item.policy, item.resource.id, item.session_id, role="staging")
        if not self.cross_account and not self.cross_region:
            raise ReplicationNotPossible(
                f"replication target of {item.resource.arn} is its own account and region; nothing to do"
            )
        if self.cross_account and not rep.access_role_arn:
            raise ReplicationNotPossible(
                f"replication of {item.resource.arn} into account {self.target_account} needs "
                "replication.access_role_arn (a role in the target account)"
            )
        sid, kind = item.session_id, self.src.kind
        # one role per power (rdsbackup_lambdas.powers): share in the source account, copy in the target
        self.source_role = powers.role_for(item.access_role_arn, powers.SHARE)
        self.target_role = powers.role_for(rep.access_role_arn, powers.REPLICA) or self.source_role
        self.src_api = SnapshotApi(
            aws_sessions.client("rds", self.src.region, self.source_role, sid), kind,
            where(self.src.account, self.src.region),
        )
        self.target_api = SnapshotApi(
            aws_sessions.client("rds", self.target_region, self.target_role, sid), kind,
            where(self.target_account, self.target_region),
        )

    # -- helpers ------------------------------------------------------------------------------------
    def _step(self, text: str) -> None:
        self.steps.append(text)
        logger.info("replication step", extra={"step": text})

    def _warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)
            logger.warning(text)

    def _result(self, phase: str, done: bool, replica: SnapshotInfo | None, staging_arn: str | None) -> dict[str, Any]:
        poll = next_poll(
            self.prev, self.item.wait, ready=done, timeout_error=ReplicationTimeout,
            what=f"replication of {self.src.arn} to {self.target_account}/{self.target_region} (phase {phase})",
        )
        return {
            "done": done, "phase": phase, **poll,
            "arn": replica.arn if replica else None,
            "staging_arn": staging_arn,
            "target": {"account": self.target_account, "region": self.target_region},
            "steps": self.steps, "warnings": self.warnings,
        }

    def _take_copy_slot(self, api: SnapshotApi, account: str, region: str) -> bool:
        """The destination must have room in its manual-snapshot quota (else ``ManualSnapshotQuotaFull`` at
        once, e.g. a vault region holding every source's replicas) and a free copy slot."""
        quotas.require_room(api.rds, self.src.kind, api.where)
        limit = self.slot_config.limits.limit(slots.COPY, account, region)
        taken = slots.acquire(self.slot_config.table_name, slots.COPY, account, region, slot_holder(self.item),
                              limit=limit, hold_seconds=slot_hold_seconds(self.item))
        return taken is not None

    def _give_copy_slot(self, account: str, region: str) -> None:
        slots.release(self.slot_config.table_name, slots.COPY, account, region, slot_holder(self.item))

    def _stage_api(self) -> SnapshotApi:
        if self.cross_region:
            return SnapshotApi(
                aws_sessions.client("rds", self.target_region,
                                    powers.role_for(self.item.access_role_arn, powers.SHARE, self.target_region),
                                    self.item.session_id),
                self.src.kind, where(self.src.account, self.target_region),
            )
        return self.src_api

    def _copy_key(self, source: SnapshotInfo, key: str | None, purpose: str) -> str | None:
        """The ``KmsKeyId`` for copying ``source``; ``None`` where AWS forbids or needs none."""
        if source.kind == "cluster" and not source.encrypted:
            self._warn(
                f"{self.src.arn} is an unencrypted DB cluster snapshot: AWS cannot encrypt it on copy, so "
                f"the {purpose} stays unencrypted"
            )
            return None
        if source.encrypted and not key:
            raise ReplicationNotPossible(
                f"cannot make the {purpose} of encrypted snapshot {source.arn}: no KMS key configured for it"
            )
        return key

    # -- the reconciler -----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        primary = self.src_api.describe(self.src.id)
        if primary is None:
            raise SnapshotFailed(f"snapshot {self.src.arn} disappeared before it could be replicated")
        replica = self.target_api.describe(self.name)
        if replica is not None:
            if is_failed_status(replica.status):
                raise SnapshotFailed(f"replica {replica.arn} is {replica.status!r}; the copy failed")
            if replica.status not in READY_STATUSES:
                return self._result("copy", False, replica, self._staging_arn_hint())
            return self._finish(primary, replica)

        share_from = primary
        staging_arn = None
        if self.cross_account:
            if self._needs_staging(primary):
                stage_api = self._stage_api()
                staging = stage_api.describe(self.staging_name)
                stage_place = (self.src.account, self.target_region if self.cross_region else self.src.region)
                if staging is None:
                    key = self.item.staging_kms_key_arn if not self.cross_region else self.rep.staging_kms_key_arn
                    key = self._copy_key(primary, key, "staging copy")
                    if not self._take_copy_slot(stage_api, *stage_place):
                        return self._result("copy-slot", False, None, None)
                    staging = stage_api.copy(
                        primary.arn, self.staging_name, kms_key_id=key,
                        source_region=self.src.region if self.cross_region else None, tags=MANAGED_TAGS,
                    )
                    self._step(f"stage: copy {primary.arn} -> {staging.arn} (key {key})")
                if is_failed_status(staging.status):
                    raise SnapshotFailed(f"staging copy {staging.arn} is {staging.status!r}")
                if staging.status not in READY_STATUSES:
                    return self._result("stage", False, None, staging.arn)
                self._give_copy_slot(*stage_place)
                if HEADER_KEY not in tags_as_dict(stage_api.tags(staging)):
                    # Metadata lets retention recognise (and remove) a staging copy a crash left behind.
                    write_tags(stage_api, staging, self.codec, self._derived_metadata(primary, staging, "staging"))
                share_from, staging_arn = staging, staging.arn
                share_api = stage_api
            else:
                share_api = self.src_api
            if self.target_account not in share_api.shared_with(share_from.id):
                share_api.set_shared(share_from.id, self.target_account, True)
                self._step(f"share: {share_from.arn} with {self.target_account}")

        key = self._copy_key(share_from, self.rep.kms_key_arn, "replica")
        if share_from.kind == "instance" and not share_from.encrypted and key is None:
            self._warn(f"replica of unencrypted {share_from.arn} stays unencrypted (no target key configured)")
        if not self._take_copy_slot(self.target_api, self.target_account, self.target_region):
            return self._result("copy-slot", False, None, staging_arn)
        replica = self.target_api.copy(
            share_from.arn, self.name, kms_key_id=key,
            source_region=share_from.region if share_from.region != self.target_region else None,
            tags=MANAGED_TAGS,
        )
        metrics.add_metric(name="SnapshotCopies", unit=MetricUnit.Count, value=1)
        self._step(f"copy: {share_from.arn} -> {replica.arn} (key {key})")
        if replica.status not in READY_STATUSES:
            return self._result("copy", False, replica, staging_arn)
        return self._finish(primary, replica)

    def _needs_staging(self, primary: SnapshotInfo) -> bool:
        if self.cross_region:
            return True
        if not primary.encrypted:
            return False
        kms = aws_sessions.client("kms", self.src.region, self.source_role, self.item.session_id)
        return not is_customer_managed_key(kms, primary.kms_key_id)

    def _staging_arn_hint(self) -> str | None:
        return self.prev.staging_arn if self.prev else None

    def _derived_metadata(self, primary: SnapshotInfo, copy: SnapshotInfo, kind: str) -> dict[str, Any]:
        metadata = trusted_metadata(self.src_api, self.codec, primary)
        metadata.update(
            {
                "kind": kind,
                "binding": binding_of(copy),
                # created_at stays the primary's: the backup's point in time orders the replica chain too.
                "copied_at": now_iso(),
                "primary_snapshot": metadata["snapshot"],
                "snapshot": {"arn": copy.arn, "id": copy.id, "kind": copy.kind, "account": copy.account,
                             "region": copy.region, "encrypted": copy.encrypted,
                             "kms_key_id": copy.kms_key_id if copy.encrypted else None},
            }
        )
        return metadata

    def _finish(self, primary: SnapshotInfo, replica: SnapshotInfo) -> dict[str, Any]:
        self._give_copy_slot(self.target_account, self.target_region)
        count = write_tags(self.target_api, replica, self.codec, self._derived_metadata(primary, replica, "replica"))
        self._step(f"tag: {replica.arn} ({count} tags)")
        staging_arn = None
        if self.cross_account:
            stage_api = self._stage_api() if self._needs_staging(primary) else None
            staging = stage_api.describe(self.staging_name) if stage_api else None
            for api, snap in ((self.src_api, primary), (stage_api, staging)):
                if api is not None and snap is not None and self.target_account in api.shared_with(snap.id):
                    api.set_shared(snap.id, self.target_account, False)
                    self._step(f"cleanup: unshare {snap.arn}")
            if stage_api is not None and staging is not None:
                staging_arn = staging.arn
                if stage_api.delete(staging.id):
                    self._step(f"cleanup: delete staging copy {staging.arn}")
        return self._result("done", True, replica, staging_arn)


def require_configured_target(item: Item, policies: dict[str, Any]) -> None:
    """Refuse an item whose replication is not exactly what its policy configures (the policies file
    shipped with the code, not the execution input: whoever may start an execution must not be able to
    send snapshots to an account of their choice, or shorten the replicas' retention)."""
    if item.replication is None:
        return
    asked = item.replication
    configured = (policies.get(item.policy) or {}).get("replication")
    if not configured:
        raise ReplicationTargetNotConfigured(
            f"policy {item.policy!r} configures no replication, yet the input asks to replicate "
            f"{item.resource.arn} to account {asked.account} region {asked.region}: refused")
    expected = Replication.model_validate({**configured, "region": configured.get("region") or item.resource.region,
                                           "account": configured.get("account") or item.resource.account})
    differ = sorted(name for name in Replication.model_fields if getattr(asked, name) != getattr(expected, name))
    if differ:
        raise ReplicationTargetNotConfigured(
            f"the input's replication of {item.resource.arn} differs from policy {item.policy!r} in "
            f"{', '.join(differ)} (asked account {asked.account} region {asked.region}, configured account "
            f"{expected.account} region {expected.region}): refused")


def replicate_snapshot(item: Item, codec: TagCodec, slot_config: SlotConfig) -> dict[str, Any]:
    """One reconciliation pass of the replication of the session's snapshot (see the module doc)."""
    if item.replication is None:
        state = ReplicaState(done=True, phase="done", steps=["no replication configured"])
        return {**state.model_dump(), "target": None}
    return _Reconciler(item, codec, slot_config).run()
