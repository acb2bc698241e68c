"""Leases: one backup per source at a time; expiry; release only by the owner."""

from __future__ import annotations

import time

import pytest
from rdsbackup_lambdas import leases
from rdsbackup_lambdas.errors import LeaseHeld
from rdsbackup_lambdas.handlers import acquire_lease, release_lease

ARN = "arn:aws:rds:us-east-1:123456789012:db:orders"


def lease_item(world) -> dict | None:
    found = world.client("dynamodb").get_item(TableName=world.table, Key={"pk": {"S": f"lease#{ARN}"}})
    return found.get("Item")


def test_first_session_takes_the_lease(world, ctx):
    item = world.item(world.instance(), session_id="demo-1")
    lease = acquire_lease.handler(item, ctx)
    assert lease["owner"] == "demo-1" and lease["expires_at"] >= time.time() + 590
    assert lease_item(world)["owner"]["S"] == "demo-1"


def test_a_second_run_for_the_same_source_fails_fast_and_says_who_holds_it(world, ctx):
    db = world.instance()
    acquire_lease.handler(world.item(db, session_id="demo-1"), ctx)
    with pytest.raises(LeaseHeld, match=r"a backup of .*:db:orders is already running \(session demo-1, until 20"):
        acquire_lease.handler(world.item(db, session_id="demo-2"), ctx)


def test_a_retry_of_the_holder_renews_its_lease(world, ctx):
    item = world.item(world.instance(), session_id="demo-1")
    first = acquire_lease.handler(item, ctx)
    again = acquire_lease.handler(item, ctx)
    assert again["owner"] == "demo-1" and again["expires_at"] >= first["expires_at"]


def test_a_crashed_holders_lease_expires(world):
    leases.acquire(world.table, ARN, "crashed", 60, now=1_000_000)
    with pytest.raises(LeaseHeld):
        leases.acquire(world.table, ARN, "next", 60, now=1_000_030)
    taken = leases.acquire(world.table, ARN, "next", 60, now=1_000_061)
    assert taken["owner"] == "next"


def test_release_only_by_the_owner(world, ctx):
    db = world.instance()
    acquire_lease.handler(world.item(db, session_id="demo-1"), ctx)
    assert release_lease.handler(world.item(db, session_id="demo-2"), ctx)["lease_released"] is False
    assert lease_item(world)["owner"]["S"] == "demo-1"
    assert release_lease.handler(world.item(db, session_id="demo-1"), ctx)["lease_released"] is True
    assert lease_item(world) is None
    assert release_lease.handler(world.item(db, session_id="demo-1"), ctx)["lease_released"] is False  # idempotent


def test_after_release_another_session_can_back_up(world, ctx):
    db = world.instance()
    acquire_lease.handler(world.item(db, session_id="demo-1"), ctx)
    release_lease.handler(world.item(db, session_id="demo-1"), ctx)
    assert acquire_lease.handler(world.item(db, session_id="demo-2"), ctx)["owner"] == "demo-2"


def test_a_lease_that_is_no_backup_resource_records_no_result(world, ctx):
    from rdsbackup_lambdas import session_store

    db = world.instance()
    item = world.item(db, session_id="test-slot-1")
    release_lease.handler({**item, "record_result": False}, ctx)
    assert session_store.read_results(world.results_table, "test-slot-1") == []
    release_lease.handler(item, ctx)
    assert [r["arn"] for r in session_store.read_results(world.results_table, "test-slot-1")] == [db["DBInstanceArn"]]
