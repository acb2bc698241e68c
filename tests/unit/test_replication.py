"""replicate_snapshot: region-only, account-only, region+account, default-key staging, waiting, limits."""

from __future__ import annotations

from contextlib import contextmanager
from unittest import mock

import botocore.client
import pytest
from botocore.exceptions import ClientError
from rdsbackup_lambdas.errors import ReplicationNotPossible, ReplicationTimeout
from rdsbackup_lambdas.handlers import create_snapshot, replicate_snapshot, tag_snapshot
from rdsbackup_lambdas.snapshot_steps import tag_codec

from rdsbackup_local.moto_patches import uninstall
from tests.unit.conftest import REGION, SOURCE_ACCOUNT, SOURCE_ROLE, TARGET_ACCOUNT, TARGET_REGION, TARGET_ROLE

_real_make_api_call = botocore.client.BaseClient._make_api_call


@contextmanager
def recorded_calls():
    """Record every AWS call (operation name, parameters) the handlers make."""
    calls: list[tuple[str, dict]] = []

    def spy(self, operation_name, params):
        calls.append((operation_name, dict(params)))
        return _real_make_api_call(self, operation_name, params)

    with mock.patch("botocore.client.BaseClient._make_api_call", spy):
        yield calls


def replication(world, *, region: str, account: str) -> dict:
    same_account = account == SOURCE_ACCOUNT
    return {
        "region": region, "account": account, "kms_key_arn": world.cmk(account, region),
        "access_role_arn": SOURCE_ROLE if same_account else TARGET_ROLE,
        "staging_kms_key_arn": world.cmk(SOURCE_ACCOUNT, region), "retention": 2,
    }


def snapshot_and_tag(world, ctx, item: dict) -> dict:
    item["snapshot"] = create_snapshot.handler(item, ctx)
    tag_snapshot.handler(item, ctx)
    return item


def snapshots_in(world, account: str, region: str, kind: str = "instance") -> list[dict]:
    rds = world.client("rds", region, account)
    if kind == "instance":
        return rds.describe_db_snapshots(SnapshotType="manual")["DBSnapshots"]
    return rds.describe_db_cluster_snapshots(SnapshotType="manual")["DBClusterSnapshots"]


def replica_metadata(world, result: dict, account: str, region: str) -> dict:
    tags = world.client("rds", region, account).list_tags_for_resource(ResourceName=result["arn"])["TagList"]
    return tag_codec(world.tag_key_arn).decode(tags, result["arn"])


def test_region_only_copies_in_the_same_account_with_the_target_key(world, ctx):
    rep = replication(world, region=TARGET_REGION, account=SOURCE_ACCOUNT)
    item = snapshot_and_tag(world, ctx, world.item(world.instance(), replication=rep))
    with recorded_calls() as calls:
        result = replicate_snapshot.handler(item, ctx)
    assert result["done"] is True and result["phase"] == "done" and result["staging_arn"] is None
    assert result["arn"] == (f"arn:aws:rds:{TARGET_REGION}:{SOURCE_ACCOUNT}:snapshot:"
                             "rdsbackup-demo-orders-20261125t031500-a1b2c3")
    copy = next(params for op, params in calls if op == "CopyDBSnapshot")
    assert copy["KmsKeyId"] == rep["kms_key_arn"]
    assert copy["SourceDBSnapshotIdentifier"] == item["snapshot"]["arn"]
    assert copy["SourceRegion"] == REGION  # boto3 turns it into the PreSignedUrl cross-region copies need
    assert not any(op == "ModifyDBSnapshotAttribute" for op, _ in calls)  # nothing shared
    [replica] = snapshots_in(world, SOURCE_ACCOUNT, TARGET_REGION)
    assert replica["KmsKeyId"] == rep["kms_key_arn"]
    metadata = replica_metadata(world, result, SOURCE_ACCOUNT, TARGET_REGION)
    assert metadata["kind"] == "replica" and metadata["primary_snapshot"]["arn"] == item["snapshot"]["arn"]
    assert metadata["source"]["arn"] == item["resource"]["arn"]


def test_account_only_with_a_customer_managed_key_shares_the_snapshot_itself_then_unshares(world, ctx):
    db = world.instance(kms_key=world.cmk())
    rep = replication(world, region=REGION, account=TARGET_ACCOUNT)
    item = snapshot_and_tag(world, ctx, world.item(db, replication=rep))
    with recorded_calls() as calls:
        result = replicate_snapshot.handler(item, ctx)
    assert result["done"] is True and result["staging_arn"] is None
    assert result["arn"].startswith(f"arn:aws:rds:{REGION}:{TARGET_ACCOUNT}:snapshot:")
    shares = [p for op, p in calls if op == "ModifyDBSnapshotAttribute"]
    assert shares[0]["ValuesToAdd"] == [TARGET_ACCOUNT] and shares[-1]["ValuesToRemove"] == [TARGET_ACCOUNT]
    assert not any(op == "CopyDBSnapshot" and "staging" in p["TargetDBSnapshotIdentifier"] for op, p in calls)
    [replica] = snapshots_in(world, TARGET_ACCOUNT, REGION)
    assert replica["KmsKeyId"] == rep["kms_key_arn"]
    assert len(snapshots_in(world, SOURCE_ACCOUNT, REGION)) == 1  # no staging copy
    attrs = world.client("rds").describe_db_snapshot_attributes(DBSnapshotIdentifier=item["snapshot"]["id"])
    assert attrs["DBSnapshotAttributesResult"]["DBSnapshotAttributes"][0]["AttributeValues"] == []
    assert replica_metadata(world, result, TARGET_ACCOUNT, REGION)["kind"] == "replica"


def test_default_key_source_is_staged_to_a_cmk_shared_copied_and_the_staging_copy_removed(world, ctx):
    db = world.instance()  # encrypted with the default key (moto: no KMS key of ours)
    rep = replication(world, region=REGION, account=TARGET_ACCOUNT)
    item = snapshot_and_tag(world, ctx, world.item(db, replication=rep))
    with recorded_calls() as calls:
        result = replicate_snapshot.handler(item, ctx)
    assert result["done"] is True
    assert result["staging_arn"].endswith("-a1b2c3-staging")
    stage = next(p for op, p in calls if op == "CopyDBSnapshot" and p["TargetDBSnapshotIdentifier"].endswith("staging"))
    assert stage["KmsKeyId"] == world.staging_key_arn
    shares = [p for op, p in calls if op == "ModifyDBSnapshotAttribute"]
    assert {s["DBSnapshotIdentifier"] for s in shares} == {stage["TargetDBSnapshotIdentifier"]}  # never the primary
    ops = [op for op, _ in calls]
    assert ops.index("DeleteDBSnapshot") > max(i for i, op in enumerate(ops) if op == "CopyDBSnapshot")
    assert [s["DBSnapshotIdentifier"] for s in snapshots_in(world, SOURCE_ACCOUNT, REGION)] == [item["snapshot"]["id"]]
    [replica] = snapshots_in(world, TARGET_ACCOUNT, REGION)
    assert replica["KmsKeyId"] == rep["kms_key_arn"]
    assert any(step.startswith("cleanup: delete staging copy") for step in result["steps"])


def test_region_and_account_chain_stages_in_the_target_region_then_copies_there(world, ctx):
    db = world.instance(kms_key=world.cmk())
    rep = replication(world, region=TARGET_REGION, account=TARGET_ACCOUNT)
    item = snapshot_and_tag(world, ctx, world.item(db, replication=rep))
    with recorded_calls() as calls:
        result = replicate_snapshot.handler(item, ctx)
    assert result["done"] is True
    assert result["staging_arn"].startswith(f"arn:aws:rds:{TARGET_REGION}:{SOURCE_ACCOUNT}:snapshot:")
    copies = [p for op, p in calls if op == "CopyDBSnapshot"]
    assert copies[0]["KmsKeyId"] == rep["staging_kms_key_arn"] and copies[0]["SourceRegion"] == REGION
    assert copies[1]["SourceDBSnapshotIdentifier"] == result["staging_arn"]
    assert copies[1]["KmsKeyId"] == rep["kms_key_arn"] and "SourceRegion" not in copies[1]
    assert snapshots_in(world, SOURCE_ACCOUNT, TARGET_REGION) == []  # staging removed
    [replica] = snapshots_in(world, TARGET_ACCOUNT, TARGET_REGION)
    assert replica["KmsKeyId"] == rep["kms_key_arn"]
    assert replica_metadata(world, result, TARGET_ACCOUNT, TARGET_REGION)["snapshot"]["arn"] == result["arn"]


def test_aurora_cluster_default_key_into_another_account(world, ctx):
    rep = replication(world, region=REGION, account=TARGET_ACCOUNT)
    item = snapshot_and_tag(world, ctx, world.item(world.cluster(), replication=rep))
    result = replicate_snapshot.handler(item, ctx)
    assert result["done"] is True and result["staging_arn"] is not None
    assert ":cluster-snapshot:" in result["arn"]
    assert len(snapshots_in(world, TARGET_ACCOUNT, REGION, "cluster")) == 1
    assert len(snapshots_in(world, SOURCE_ACCOUNT, REGION, "cluster")) == 1
    metadata = replica_metadata(world, result, TARGET_ACCOUNT, REGION)
    assert len(metadata["instances"]) == 3


def test_unencrypted_cluster_is_copied_without_a_key_and_warns(world, ctx):
    rep = replication(world, region=TARGET_REGION, account=SOURCE_ACCOUNT)
    item = snapshot_and_tag(world, ctx, world.item(world.cluster(encrypted=False), replication=rep))
    with recorded_calls() as calls:
        result = replicate_snapshot.handler(item, ctx)
    copy = next(p for op, p in calls if op == "CopyDBClusterSnapshot")
    assert "KmsKeyId" not in copy  # AWS refuses KmsKeyId for an unencrypted cluster snapshot
    assert result["done"] is True
    assert any("unencrypted DB cluster snapshot" in w for w in result["warnings"])


def test_unencrypted_instance_is_encrypted_on_copy(world, ctx):
    rep = replication(world, region=TARGET_REGION, account=SOURCE_ACCOUNT)
    item = snapshot_and_tag(world, ctx, world.item(world.instance(encrypted=False), replication=rep))
    result = replicate_snapshot.handler(item, ctx)
    [replica] = snapshots_in(world, SOURCE_ACCOUNT, TARGET_REGION)
    assert replica["Encrypted"] is True and replica["KmsKeyId"] == rep["kms_key_arn"]
    assert result["warnings"] == []


def _copies_report(status: str):
    def fake(self, operation_name, params):
        result = _real_make_api_call(self, operation_name, params)
        if operation_name in ("CopyDBSnapshot", "DescribeDBSnapshots"):
            for snap in [result.get("DBSnapshot"), *result.get("DBSnapshots", [])]:
                if snap and snap["DBSnapshotArn"].split(":")[3] == TARGET_REGION:
                    snap["Status"] = status
        return result

    return mock.patch("botocore.client.BaseClient._make_api_call", fake)


def test_reconciler_waits_for_the_copy_with_growing_intervals_without_copying_twice(world, ctx):
    rep = replication(world, region=TARGET_REGION, account=SOURCE_ACCOUNT)
    item = snapshot_and_tag(world, ctx, world.item(world.instance(), replication=rep))
    with _copies_report("copying"):
        first = replicate_snapshot.handler(item, ctx)
        item["replica"] = first
        second = replicate_snapshot.handler(item, ctx)
        item["replica"] = second
    assert (first["done"], first["phase"], first["wait_seconds"]) == (False, "copy", 5)
    assert (second["done"], second["phase"], second["wait_seconds"], second["waited_seconds"]) == (False, "copy", 10, 5)
    done = replicate_snapshot.handler(item, ctx)
    assert done["done"] is True and done["attempt"] == 3 and done["waited_seconds"] == 15
    assert len(snapshots_in(world, SOURCE_ACCOUNT, TARGET_REGION)) == 1
    assert sum(step.startswith("copy:") for step in done["steps"]) == 1


def test_replication_times_out_clearly(world, ctx):
    rep = replication(world, region=TARGET_REGION, account=SOURCE_ACCOUNT)
    item = snapshot_and_tag(world, ctx, world.item(world.instance(), replication=rep))
    with _copies_report("copying"), pytest.raises(ReplicationTimeout, match="phase copy"):
        for _ in range(20):
            item["replica"] = replicate_snapshot.handler(item, ctx)


def test_retry_after_completion_finds_the_replica_and_does_not_restage(world, ctx):
    rep = replication(world, region=REGION, account=TARGET_ACCOUNT)
    item = snapshot_and_tag(world, ctx, world.item(world.instance(), replication=rep))
    first = replicate_snapshot.handler(item, ctx)
    again = replicate_snapshot.handler(item, ctx)  # a Step Functions retry of the same call
    assert again["done"] is True and again["arn"] == first["arn"]
    assert len(snapshots_in(world, SOURCE_ACCOUNT, REGION)) == 1
    assert len(snapshots_in(world, TARGET_ACCOUNT, REGION)) == 1


def test_no_replication_is_done_at_once(world, ctx):
    item = snapshot_and_tag(world, ctx, world.item(world.instance()))
    result = replicate_snapshot.handler(item, ctx)
    assert result["done"] is True and result["arn"] is None


def test_replication_to_the_same_place_is_not_possible(world, ctx):
    rep = replication(world, region=REGION, account=SOURCE_ACCOUNT)
    item = snapshot_and_tag(world, ctx, world.item(world.instance(), replication=rep))
    with pytest.raises(ReplicationNotPossible, match="its own account and region"):
        replicate_snapshot.handler(item, ctx)


def test_cross_account_without_a_target_role_is_not_possible(world, ctx):
    rep = {**replication(world, region=REGION, account=TARGET_ACCOUNT), "access_role_arn": None}
    item = snapshot_and_tag(world, ctx, world.item(world.instance(), replication=rep))
    with pytest.raises(ReplicationNotPossible, match="access_role_arn"):
        replicate_snapshot.handler(item, ctx)


def test_moto_patch_resolves_only_snapshots_shared_with_the_caller(world, ctx):
    item = world.item(world.instance())
    snap = create_snapshot.handler(item, ctx)
    target = world.client("rds", REGION, TARGET_ACCOUNT)
    with pytest.raises(ClientError, match="DBSnapshotNotFound"):  # not shared: still not found
        target.copy_db_snapshot(SourceDBSnapshotIdentifier=snap["arn"], TargetDBSnapshotIdentifier="mine")
    world.client("rds").modify_db_snapshot_attribute(
        DBSnapshotIdentifier=snap["id"], AttributeName="restore", ValuesToAdd=[TARGET_ACCOUNT])
    copied = target.copy_db_snapshot(SourceDBSnapshotIdentifier=snap["arn"], TargetDBSnapshotIdentifier="mine")
    assert copied["DBSnapshot"]["DBSnapshotArn"].split(":")[4] == TARGET_ACCOUNT
    uninstall()  # moto's own behaviour: the gap the patch fills
    try:
        with pytest.raises(ClientError, match="DBSnapshotNotFound"):
            target.copy_db_snapshot(SourceDBSnapshotIdentifier=snap["arn"], TargetDBSnapshotIdentifier="mine2")
    finally:
        from rdsbackup_local.moto_patches import install

        install()


@pytest.mark.parametrize(("field", "tampered"), [("account", "999999999999"), ("region", "ap-south-1"),
                                                  ("access_role_arn", "arn:aws:iam::999999999999:role/collector"),
                                                  ("retention", 1)])
def test_a_tampered_replication_target_is_refused_by_the_handler(world, ctx, field, tampered):
    """The policy (shipped with the code) replicates to the vault account; an execution input naming
    another target, role or retention is refused before anything is copied or shared."""
    from rdsbackup_lambdas.errors import ReplicationTargetNotConfigured
    from rdsbackup_lambdas.handlers import apply_retention

    db = world.instance()
    item = snapshot_and_tag(world, ctx, world.item(db, replication=replication(
        world, region=REGION, account=TARGET_ACCOUNT)))
    item["replication"] = {**item["replication"], field: tampered}
    with recorded_calls() as calls, pytest.raises(ReplicationTargetNotConfigured, match=field):
        replicate_snapshot.handler(item, ctx)
    assert not [op for op, _ in calls if op in ("CopyDBSnapshot", "ModifyDBSnapshotAttribute")]
    assert not snapshots_in(world, TARGET_ACCOUNT, REGION)
    with pytest.raises(ReplicationTargetNotConfigured):
        apply_retention.handler(item, ctx)


def test_replication_is_refused_for_a_policy_that_configures_none(world, ctx):
    from rdsbackup_lambdas.errors import ReplicationTargetNotConfigured

    db = world.instance()
    item = snapshot_and_tag(world, ctx, world.item(db, policy="local-only"))
    item["replication"] = replication(world, region=REGION, account=TARGET_ACCOUNT)
    with pytest.raises(ReplicationTargetNotConfigured, match="configures no replication"):
        replicate_snapshot.handler(item, ctx)
