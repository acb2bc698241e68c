"""resolve_policy: explicit ids/ARNs, tags, pagination, cluster members, subsets, errors."""

from __future__ import annotations

import json
import os

import pytest
from rdsbackup_lambdas import session_store
from rdsbackup_lambdas.errors import NoResourcesSelected, ResourceNotInPolicy, SourceNotFound, UnknownPolicy
from rdsbackup_lambdas.handlers import create_snapshot, resolve_policy

from tests.unit.conftest import REGION, SOURCE_ACCOUNT, SOURCE_ROLE, TARGET_REGION

EXECUTION = {"execution_name": "run-1", "started_at": "2026-11-25T03:15:00.123Z"}


def policy(world, *, resources=(), tags=None, targets=None, **extra) -> dict:
    return {
        "selection": {
            "resources": list(resources), "tags": tags or {},
            "targets": targets or [{"account": SOURCE_ACCOUNT, "region": REGION, "access_role_arn": SOURCE_ROLE,
                                    "staging_kms_key_arn": world.staging_key_arn}],
        },
        "snapshot_retention": 3, "concurrency": 2, "lease_seconds": 900,
        "wait": {"initial_seconds": 1, "max_seconds": 4, "factor": 2, "timeout_seconds": 30},
        **extra,
    }


def resolve(monkeypatch, ctx, policies: dict, name: str = "demo", resources=None) -> dict:
    """The session resolve_policy returns, with the items it wrote to the sessions bucket."""
    monkeypatch.setenv("POLICIES_JSON", json.dumps(policies))
    session = resolve_policy.handler({"policy": name, "resources": resources, **EXECUTION}, ctx)
    assert set(session) == {"session_id", "policy", "started_at", "max_concurrency", "resource_count", "items_key"}
    items = session_store.read_items(os.environ["SESSIONS_BUCKET"], session["items_key"])
    assert session["resource_count"] == len(items)
    return {**session, "items": items}


def arns(session: dict) -> list[str]:
    return [i["resource"]["arn"] for i in session["items"]]


def test_session_and_items_follow_the_contract(world, ctx, monkeypatch):
    db = world.instance()
    session = resolve(monkeypatch, ctx, {"demo": policy(world, resources=["orders"])})
    assert session["session_id"] == "demo-20261125T031500-" + session["session_id"][-6:]
    assert session["max_concurrency"] == 2 and session["started_at"] == EXECUTION["started_at"]
    [item] = session["items"]
    assert item == {
        "session_id": session["session_id"], "policy": "demo",
        "resource": {"arn": db["DBInstanceArn"], "id": "orders", "kind": "instance", "account": SOURCE_ACCOUNT,
                     "region": REGION, "engine": "postgres"},
        "access_role_arn": SOURCE_ROLE, "staging_kms_key_arn": world.staging_key_arn, "snapshot_retention": 3,
        "retention_min_age_seconds": 0, "replication": None, "lease_seconds": 900,
        "wait": {"initial_seconds": 1, "max_seconds": 4, "factor": 2.0, "timeout_seconds": 30,
                 "slot_timeout_seconds": 14400},
        "image_backup": None,
        # what the resource's states add, null until they do
        "lease": None, "snapshot": None, "replica": None, "retention": None, "image": None, "image_cleanup": None,
        "error": None,
    }


def test_the_same_execution_always_gets_the_same_session(world, ctx, monkeypatch):
    world.instance()
    policies = {"demo": policy(world, resources=["orders"])}
    assert resolve(monkeypatch, ctx, policies)["session_id"] == resolve(monkeypatch, ctx, policies)["session_id"]


def test_explicit_arns_and_clusters(world, ctx, monkeypatch):
    world.instance("orders")
    cluster = world.cluster("ledger")
    session = resolve(monkeypatch, ctx, {"demo": policy(world, resources=[cluster["DBClusterArn"], "ORDERS"])})
    assert sorted(i["resource"]["kind"] for i in session["items"]) == ["cluster", "instance"]


def test_tag_selection_skips_untagged_and_cluster_members(world, ctx, monkeypatch):
    world.instance("a", tags={"backup": "daily"})
    world.instance("b", tags={"backup": "weekly"})
    world.instance("c")
    world.cluster("ledger", tags={"backup": "daily"})
    rds = world.client("rds")
    rds.add_tags_to_resource(ResourceName=rds.describe_db_instances(DBInstanceIdentifier="ledger-1")
                             ["DBInstances"][0]["DBInstanceArn"], Tags=[{"Key": "backup", "Value": "daily"}])
    session = resolve(monkeypatch, ctx, {"demo": policy(world, tags={"backup": "daily"})})
    assert sorted(i["resource"]["id"] for i in session["items"]) == ["a", "ledger"]


def test_explicitly_named_cluster_member_is_not_selected(world, ctx, monkeypatch):
    world.cluster("ledger")
    with pytest.raises(NoResourcesSelected):
        resolve(monkeypatch, ctx, {"demo": policy(world, resources=["ledger-1"])})


def test_selection_pages_through_more_than_a_hundred_instances(world, ctx, monkeypatch):
    for n in range(105):
        world.instance(f"db{n:03d}", tags={"backup": "daily"}, encrypted=False)
    session = resolve(monkeypatch, ctx, {"demo": policy(world, tags={"backup": "daily"})})
    assert len(session["items"]) == 105


def test_every_target_account_and_region_is_searched(world, ctx, monkeypatch):
    world.instance("east", tags={"backup": "daily"})
    world.instance("west", region=TARGET_REGION, tags={"backup": "daily"})
    targets = [{"account": SOURCE_ACCOUNT, "region": region, "access_role_arn": SOURCE_ROLE}
               for region in (REGION, TARGET_REGION)]
    session = resolve(monkeypatch, ctx, {"demo": policy(world, tags={"backup": "daily"}, targets=targets)})
    assert sorted((i["resource"]["id"], i["resource"]["region"]) for i in session["items"]) == [
        ("east", REGION), ("west", TARGET_REGION)]


def test_replication_defaults_to_the_resources_account(world, ctx, monkeypatch):
    world.instance()
    rep = {"region": TARGET_REGION, "kms_key_arn": "arn:aws:kms:eu-west-1:123456789012:key/x", "retention": 4}
    session = resolve(monkeypatch, ctx, {"demo": policy(world, resources=["orders"], replication=rep)})
    replication = session["items"][0]["replication"]
    assert replication["account"] == SOURCE_ACCOUNT and replication["region"] == TARGET_REGION
    assert replication["retention"] == 4


def test_unknown_policy_names_the_configured_ones(world, ctx, monkeypatch):
    with pytest.raises(UnknownPolicy, match="unknown policy 'nope' \\(configured: daily, demo\\)"):
        resolve(monkeypatch, ctx, {"demo": policy(world), "daily": policy(world)}, name="nope")


def test_nothing_selected(world, ctx, monkeypatch):
    world.instance()
    with pytest.raises(NoResourcesSelected, match="policy 'demo' selects no DB instance or cluster"):
        resolve(monkeypatch, ctx, {"demo": policy(world, tags={"backup": "daily"})})


def test_resources_subset_by_id_or_arn(world, ctx, monkeypatch):
    a = world.instance("a", tags={"backup": "daily"})
    world.instance("b", tags={"backup": "daily"})
    policies = {"demo": policy(world, tags={"backup": "daily"})}
    assert arns(resolve(monkeypatch, ctx, policies, resources=["a"])) == [a["DBInstanceArn"]]
    assert arns(resolve(monkeypatch, ctx, policies, resources=[a["DBInstanceArn"]])) == [a["DBInstanceArn"]]


def test_resource_outside_the_policy_is_refused(world, ctx, monkeypatch):
    world.instance("a", tags={"backup": "daily"})
    world.instance("other")
    with pytest.raises(ResourceNotInPolicy, match="'other' is not selected by policy 'demo'"):
        resolve(monkeypatch, ctx, {"demo": policy(world, tags={"backup": "daily"})}, resources=["other"])


def test_explicit_resource_that_does_not_exist_fails_its_item_not_the_session(world, ctx, monkeypatch):
    world.instance("orders")
    session = resolve(monkeypatch, ctx, {"demo": policy(world, resources=["orders", "gone"])})
    assert sorted(i["resource"]["id"] for i in session["items"]) == ["gone", "orders"]
    gone = next(i for i in session["items"] if i["resource"]["id"] == "gone")
    with pytest.raises(SourceNotFound, match="'gone' not found"):
        create_snapshot.handler(gone, ctx)
