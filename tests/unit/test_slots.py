"""Slots shared by every session (snapshot creations per account-region, copies per destination) and the
manual-snapshot quota check, as the handlers use them."""

from __future__ import annotations

import json

import pytest
from rdsbackup_lambdas import slots
from rdsbackup_lambdas.errors import ConfigurationError, ManualSnapshotQuotaFull, SlotWaitTimeout
from rdsbackup_lambdas.handlers import check_snapshot, create_snapshot, release_lease, replicate_snapshot, tag_snapshot

from rdsbackup_local import moto_patches
from tests.unit.conftest import REGION, SOURCE_ACCOUNT, TARGET_REGION

SNAPSHOT_SLOT = (slots.SNAPSHOT, SOURCE_ACCOUNT, REGION)


def fill(world, kind: str, account: str, region: str, count: int, *, session: str = "other-session") -> None:
    for number in range(count):
        assert slots.acquire(world.table, kind, account, region, f"{session}#db-{number}", limit=count,
                             hold_seconds=600) is not None


def test_a_slot_is_taken_once_per_holder_and_refused_beyond_the_limit(world):
    assert slots.acquire(world.table, *SNAPSHOT_SLOT, "s1#a", limit=2, hold_seconds=60) == 1
    assert slots.acquire(world.table, *SNAPSHOT_SLOT, "s1#a", limit=2, hold_seconds=60) == 1  # a retry
    assert slots.acquire(world.table, *SNAPSHOT_SLOT, "s2#b", limit=2, hold_seconds=60) == 2
    assert slots.acquire(world.table, *SNAPSHOT_SLOT, "s2#c", limit=2, hold_seconds=60) is None
    assert slots.release(world.table, *SNAPSHOT_SLOT, "s1#a") is True
    assert slots.release(world.table, *SNAPSHOT_SLOT, "s1#a") is False
    assert slots.acquire(world.table, *SNAPSHOT_SLOT, "s2#c", limit=2, hold_seconds=60) == 2


def test_a_dead_holders_slot_expires(world):
    slots.acquire(world.table, *SNAPSHOT_SLOT, "crashed#a", limit=1, hold_seconds=60, now=1_000_000)
    assert slots.acquire(world.table, *SNAPSHOT_SLOT, "next#a", limit=1, hold_seconds=60, now=1_000_030) is None
    assert slots.acquire(world.table, *SNAPSHOT_SLOT, "next#a", limit=1, hold_seconds=60, now=1_000_061) == 1


def test_limits_default_to_aws_and_are_raised_per_account_region():
    limits = slots.SlotLimits.from_json(json.dumps({"places": {f"{SOURCE_ACCOUNT}/{REGION}": {"snapshot": 300}}}))
    assert limits.limit(slots.SNAPSHOT, SOURCE_ACCOUNT, REGION) == 300
    assert limits.limit(slots.SNAPSHOT, SOURCE_ACCOUNT, TARGET_REGION) == 100
    assert limits.limit(slots.COPY, SOURCE_ACCOUNT, TARGET_REGION) == 20
    with pytest.raises(ConfigurationError, match="unknown slot kinds"):
        slots.SlotLimits.from_json('{"defaults": {"copies": 5}}')


def test_create_snapshot_waits_while_another_session_holds_every_slot(world, ctx, monkeypatch):
    monkeypatch.setenv("SLOT_LIMITS", json.dumps({"defaults": {"snapshot": 2}}))
    fill(world, *SNAPSHOT_SLOT, 2)
    item = world.item(world.instance())
    waiting = create_snapshot.handler(item, ctx)
    assert waiting == {"started": False, "attempt": 1, "wait_seconds": 5, "waited_seconds": 0}
    assert world.client("rds").describe_db_snapshots(SnapshotType="manual")["DBSnapshots"] == []
    again = create_snapshot.handler({**item, "snapshot": waiting}, ctx)
    assert again["started"] is False and again["attempt"] == 2 and again["waited_seconds"] == 5
    slots.release(world.table, *SNAPSHOT_SLOT, "other-session#db-0")
    started = create_snapshot.handler({**item, "snapshot": again}, ctx)
    assert started["started"] is True and started["arn"].endswith(started["id"])
    assert slots.in_use(world.table, *SNAPSHOT_SLOT) == 2
    # the slot is given back once the snapshot is available
    check_snapshot.handler({**item, "snapshot": started}, ctx)
    assert slots.in_use(world.table, *SNAPSHOT_SLOT) == 1


def test_waiting_for_a_slot_is_bounded(world, ctx, monkeypatch):
    monkeypatch.setenv("SLOT_LIMITS", json.dumps({"defaults": {"snapshot": 1}}))
    fill(world, *SNAPSHOT_SLOT, 1)
    item = world.item(world.instance())
    item["wait"]["slot_timeout_seconds"] = 10
    with pytest.raises(SlotWaitTimeout, match="free snapshot slot"):
        create_snapshot.handler({**item, "snapshot": {"started": False, "attempt": 3, "wait_seconds": 5,
                                                      "waited_seconds": 5}}, ctx)


def test_a_full_manual_snapshot_quota_fails_at_once_naming_account_region_usage_and_limit(world, ctx):
    db = world.instance()
    moto_patches.MANUAL_SNAPSHOT_QUOTAS[(SOURCE_ACCOUNT, REGION, "ManualSnapshots")] = 2
    rds = world.client("rds")
    for number in range(2):
        rds.create_db_snapshot(DBSnapshotIdentifier=f"users-own-{number}", DBInstanceIdentifier="orders")
    with pytest.raises(ManualSnapshotQuotaFull) as failed:
        create_snapshot.handler(world.item(db), ctx)
    message = str(failed.value)
    assert f"account {SOURCE_ACCOUNT} region {REGION}" in message and "has 2 of 2 manual DB snapshots" in message
    assert "Raise the quota" in message and "snapshot_retention" in message
    assert slots.in_use(world.table, *SNAPSHOT_SLOT) == 0, "a resource that cannot start holds no slot"


def test_a_raised_quota_is_read_from_rds(world, ctx):
    db = world.instance()
    rds = world.client("rds")
    for number in range(100):
        rds.create_db_snapshot(DBSnapshotIdentifier=f"users-own-{number}", DBInstanceIdentifier="orders")
    with pytest.raises(ManualSnapshotQuotaFull):
        create_snapshot.handler(world.item(db), ctx)
    moto_patches.MANUAL_SNAPSHOT_QUOTAS[(SOURCE_ACCOUNT, REGION, "ManualSnapshots")] = 150  # raised in Service Quotas
    assert create_snapshot.handler(world.item(db), ctx)["started"] is True


def test_copies_wait_for_a_copy_slot_of_the_destination_region(world, ctx, monkeypatch):
    monkeypatch.setenv("SLOT_LIMITS", json.dumps({"defaults": {"copy": 1}}))
    replication = {"region": TARGET_REGION, "account": SOURCE_ACCOUNT, "kms_key_arn": world.cmk(region=TARGET_REGION),
                   "retention": 2}
    item = world.item(world.instance(), replication=replication)
    item["snapshot"] = create_snapshot.handler(item, ctx)
    tag_snapshot.handler(item, ctx)
    fill(world, slots.COPY, SOURCE_ACCOUNT, TARGET_REGION, 1)
    waiting = replicate_snapshot.handler(item, ctx)
    assert waiting["done"] is False and waiting["phase"] == "copy-slot" and waiting["wait_seconds"] == 5
    assert world.client("rds", TARGET_REGION).describe_db_snapshots()["DBSnapshots"] == []
    slots.release(world.table, slots.COPY, SOURCE_ACCOUNT, TARGET_REGION, "other-session#db-0")
    done = replicate_snapshot.handler({**item, "replica": waiting}, ctx)
    assert done["done"] is True and done["arn"]
    assert slots.in_use(world.table, slots.COPY, SOURCE_ACCOUNT, TARGET_REGION) == 0


def test_release_lease_gives_back_the_slots_of_a_failed_resource(world, ctx):
    replication = {"region": TARGET_REGION, "account": SOURCE_ACCOUNT, "retention": 2}
    item = world.item(world.instance(), replication=replication)
    holder = slots.holder_name(item["session_id"], item["resource"]["arn"])
    slots.acquire(world.table, *SNAPSHOT_SLOT, holder, limit=5, hold_seconds=60)
    slots.acquire(world.table, slots.COPY, SOURCE_ACCOUNT, TARGET_REGION, holder, limit=5, hold_seconds=60)
    assert release_lease.handler(item, ctx)["slots_released"] == 2
    assert slots.in_use(world.table, *SNAPSHOT_SLOT) == 0
