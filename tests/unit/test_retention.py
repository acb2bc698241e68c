"""apply_retention: keeps the last N of this tool's snapshots per source and replica target, nothing else."""

from __future__ import annotations

import itertools

import pytest
from rdsbackup_lambdas import snapshot_steps
from rdsbackup_lambdas.handlers import apply_retention, create_snapshot, replicate_snapshot, tag_snapshot
from rdsbackup_lambdas.tag_metadata import MANAGED_KEY

from tests.unit.conftest import SOURCE_ACCOUNT, TARGET_REGION


@pytest.fixture(autouse=True)
def ordered_clock(monkeypatch):
    """Each tagging records a later created_at (sessions made within one second must still order)."""
    minutes = itertools.count()

    def later() -> str:
        minute = next(minutes)
        return f"2026-11-25T{minute // 60:02d}:{minute % 60:02d}:00Z"

    monkeypatch.setattr(snapshot_steps, "now_iso", later)


def run_session(world, ctx, db: dict, n: int, *, retention: int, policy: str = "demo", replication=None) -> dict:
    """Snapshot, tag (and replicate) as session number ``n``; returns the ITEM with results."""
    item = world.item(db, session_id=f"{policy}-20261125T0{n}0000-abc{n:03d}", policy=policy,
                      retention=retention, replication=replication)
    item["snapshot"] = create_snapshot.handler(item, ctx)
    tag_snapshot.handler(item, ctx)
    if replication:
        item["replica"] = replicate_snapshot.handler(item, ctx)
    return item


def manual_snapshots(world, region: str = "us-east-1", account: str = SOURCE_ACCOUNT) -> set[str]:
    rds = world.client("rds", region, account)
    return {s["DBSnapshotIdentifier"] for s in rds.describe_db_snapshots(SnapshotType="manual")["DBSnapshots"]}


def test_retention_deletes_exactly_the_oldest_beyond_n(world, ctx):
    db = world.instance()
    items = [run_session(world, ctx, db, n, retention=2) for n in range(1, 5)]
    result = apply_retention.handler(items[-1], ctx)
    ids = [i["snapshot"]["id"] for i in items]
    assert sorted(result["deleted"]) == sorted(i["snapshot"]["arn"] for i in items[:2])
    assert result["kept"] == [items[3]["snapshot"]["arn"], items[2]["snapshot"]["arn"]]
    assert manual_snapshots(world) == set(ids[2:])


def test_snapshots_the_tool_did_not_make_are_never_touched(world, ctx):
    db = world.instance()
    rds = world.client("rds")
    rds.create_db_snapshot(DBSnapshotIdentifier="users-own", DBInstanceIdentifier="orders")
    rds.create_db_snapshot(DBSnapshotIdentifier="forged-marker", DBInstanceIdentifier="orders",
                           Tags=[{"Key": MANAGED_KEY, "Value": "true"}, {"Key": "rdsbackup:meta", "Value": "v1 1 x y"},
                                 {"Key": "rdsbackup:meta:00", "Value": "AAAA"}])
    items = [run_session(world, ctx, db, n, retention=1) for n in range(1, 4)]
    # Tags of a real managed snapshot copied onto the user's snapshot: bound to another snapshot.
    real_tags = rds.list_tags_for_resource(ResourceName=items[0]["snapshot"]["arn"])["TagList"]
    rds.create_db_snapshot(DBSnapshotIdentifier="copied-tags", DBInstanceIdentifier="orders", Tags=real_tags)
    result = apply_retention.handler(items[-1], ctx)
    assert manual_snapshots(world) == {"users-own", "forged-marker", "copied-tags", items[-1]["snapshot"]["id"]}
    assert result["rejected_tags"] == 2 and result["skipped_unmanaged"] == 3
    assert len(result["deleted"]) == 2


def test_the_current_sessions_snapshot_is_never_deleted(world, ctx, monkeypatch):
    db = world.instance()
    old = [run_session(world, ctx, db, n, retention=1) for n in range(1, 3)]
    # The current session's metadata claims to be the oldest: it is still kept, as one of the N.
    monkeypatch.setattr(snapshot_steps, "now_iso", lambda: "2000-01-01T00:00:00Z")
    current = run_session(world, ctx, db, 3, retention=1)
    result = apply_retention.handler(current, ctx)
    assert result["kept"] == [current["snapshot"]["arn"]]
    assert sorted(result["deleted"]) == sorted(i["snapshot"]["arn"] for i in old)


def test_other_sources_and_other_policies_keep_their_own_chains(world, ctx):
    orders, billing = world.instance("orders"), world.instance("billing")
    for n in range(1, 4):
        run_session(world, ctx, billing, n, retention=1)
        run_session(world, ctx, orders, n, retention=1, policy="weekly")
    current = run_session(world, ctx, orders, 4, retention=1)
    result = apply_retention.handler(current, ctx)
    assert result["deleted"] == []
    assert len(manual_snapshots(world)) == 3 + 3 + 1


def test_replica_chain_is_kept_per_target(world, ctx):
    db = world.instance()
    rep = {"region": TARGET_REGION, "account": SOURCE_ACCOUNT, "kms_key_arn": world.cmk(SOURCE_ACCOUNT, TARGET_REGION),
           "access_role_arn": None, "staging_kms_key_arn": None, "retention": 2}
    items = [run_session(world, ctx, db, n, retention=5, replication=rep) for n in range(1, 5)]
    result = apply_retention.handler(items[-1], ctx)
    assert result["deleted"] == []
    assert sorted(result["replica_deleted"]) == sorted(i["replica"]["arn"] for i in items[:2])
    assert result["replica_kept"] == [items[3]["replica"]["arn"], items[2]["replica"]["arn"]]
    assert manual_snapshots(world, TARGET_REGION) == {i["snapshot"]["id"] for i in items[2:]}
    assert len(manual_snapshots(world)) == 4


def test_a_snapshot_still_being_created_is_not_deleted(world, ctx):
    from tests.unit.test_snapshot_handlers import snapshot_status

    db = world.instance()
    items = [run_session(world, ctx, db, n, retention=1) for n in range(1, 3)]
    with snapshot_status("creating"):
        result = apply_retention.handler(items[-1], ctx)
    assert result["deleted"] == [] and any("not deleted this time" in w for w in result["warnings"])


def test_replayed_tags_on_a_snapshot_recreated_under_the_same_name_are_rejected(world, ctx, monkeypatch):
    """The DB is recreated under its name, a snapshot is made under a managed snapshot's name and the old
    tags replayed onto it: the ARN matches and the metadata authenticates, but the snapshot was created
    later than the one the metadata was made for, so retention neither counts nor deletes it."""
    from dataclasses import replace
    from datetime import timedelta

    from rdsbackup_lambdas.snapshots import SnapshotApi

    db = world.instance()
    first = run_session(world, ctx, db, 1, retention=1)
    rds = world.client("rds")
    replayed = rds.list_tags_for_resource(ResourceName=first["snapshot"]["arn"])["TagList"]
    rds.delete_db_snapshot(DBSnapshotIdentifier=first["snapshot"]["id"])
    rds.delete_db_instance(DBInstanceIdentifier="orders", SkipFinalSnapshot=True)
    db = world.instance()
    rds.create_db_snapshot(DBSnapshotIdentifier=first["snapshot"]["id"], DBInstanceIdentifier="orders",
                           Tags=replayed)
    listed = SnapshotApi.list_manual
    recreated = first["snapshot"]["arn"]

    def recreated_an_hour_later(self, source_id):
        # moto gives a recreated DB its old resource id and the snapshot this second's time; AWS would not
        for info in listed(self, source_id):
            yield replace(info, created=info.created + timedelta(hours=1)) if info.arn == recreated else info

    monkeypatch.setattr(SnapshotApi, "list_manual", recreated_an_hour_later)
    second = run_session(world, ctx, db, 2, retention=1)
    result = apply_retention.handler(second, ctx)
    assert result["rejected_tags"] == 1
    assert result["deleted"] == []
    assert first["snapshot"]["id"] in manual_snapshots(world)


def test_ten_sessions_in_a_row_lose_nothing_older_than_the_minimum_age(world, ctx, monkeypatch):
    """Two scheduled snapshots from this morning, then a burst of ten sessions with keep_last 2 and a
    one-day minimum age (what a daily schedule keeps): without the minimum age the burst would push the
    history out of the last two and delete it; with it, nothing younger than a day goes."""
    from dataclasses import replace
    from datetime import timedelta

    from rdsbackup_lambdas.snapshots import SnapshotApi

    db = world.instance()
    history = [run_session(world, ctx, db, n, retention=2) for n in (1, 2)]
    aged = {i["snapshot"]["arn"] for i in history}
    listed = SnapshotApi.list_manual

    def list_with_history_hours_old(self, source_id):
        for info in listed(self, source_id):
            yield replace(info, created=info.created - timedelta(hours=12)) if info.arn in aged else info

    monkeypatch.setattr(SnapshotApi, "list_manual", list_with_history_hours_old)
    deleted = []
    for n in range(3, 13):
        item = run_session(world, ctx, db, n, retention=2)
        item["retention_min_age_seconds"] = 86400
        deleted += apply_retention.handler(item, ctx)["deleted"]
    assert not aged & set(deleted)
    assert deleted == []
    assert {i["snapshot"]["id"] for i in history} <= manual_snapshots(world)


def test_a_recreated_database_starts_a_new_chain_and_the_old_one_is_kept_with_a_warning(world, ctx):
    """orders is deleted and created again under its name (AWS gives it a new resource id; moto needs
    telling: unique_resource_ids). Its snapshots are another chain: retention keeps the new database's
    last two, and the old database's three are neither counted nor deleted; the warning (which makes the
    session a Warning, so SNS hears of it) names them."""
    from rdsbackup_local.moto_patches import unique_resource_ids

    with unique_resource_ids():
        db = world.instance()
        old = [run_session(world, ctx, db, n, retention=2) for n in (1, 2, 3)]
        world.client("rds").delete_db_instance(DBInstanceIdentifier="orders", SkipFinalSnapshot=True)
        db = world.instance()
        new = [run_session(world, ctx, db, n, retention=2) for n in (4, 5, 6)]
    result = apply_retention.handler(new[-1], ctx)
    assert result["deleted"] == [new[0]["snapshot"]["arn"]]
    assert {i["snapshot"]["id"] for i in old} <= manual_snapshots(world)
    (warning,) = [w for w in result["warnings"] if "recreated" in w]
    assert "3 primary snapshot(s)" in warning and db["DBInstanceArn"] in warning
