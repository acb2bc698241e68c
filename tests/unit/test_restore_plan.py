"""The restore plan's pure parts: input validation, the names it derives."""

from __future__ import annotations

import pytest
from rdsbackup_lambdas.errors import RestoreInputInvalid
from rdsbackup_lambdas.restore.database import parse_database_input
from rdsbackup_lambdas.restore.models import IDENTIFIER, MAX_IDENTIFIER, parse_input
from rdsbackup_lambdas.restore.plan import aside_name, member_name, restore_id_for

SNAPSHOT = "arn:aws:rds:us-east-1:123456789012:snapshot:rdsbackup-nightly-orders-db-20261128t030000-1a2b3c"


def test_restore_ids_are_stable_per_execution_and_differ_between_executions():
    first = restore_id_for("run-1", "2026-11-28T03:00:00Z")
    assert first == restore_id_for("run-1", "2026-11-28T03:00:00Z")
    assert first != restore_id_for("run-2", "2026-11-28T03:00:00Z")
    assert first.startswith("restore-20261128T030000-")


def test_the_original_is_put_aside_under_a_valid_name_of_at_most_63_characters():
    restore_id = restore_id_for("run-1", "2026-11-28T03:00:00Z")
    assert aside_name("orders-db", restore_id) == f"orders-db-replaced-{restore_id.rsplit('-', 1)[1]}"
    long = aside_name("a" * 60 + "-b", restore_id)
    assert len(long) <= MAX_IDENTIFIER and long.endswith(restore_id.rsplit("-", 1)[1])
    assert IDENTIFIER.match(long)


def test_cluster_members_are_named_after_the_restored_cluster():
    assert member_name("ledger-2", "ledger", "ledger") == "ledger-2"  # replace: the recorded names
    assert member_name("ledger-2", "ledger", "ledger-copy") == "ledger-copy-2"
    assert member_name("reader-east", "ledger", "ledger-copy") == "ledger-copy-reader-east"
    one, two = (member_name(f"{'x' * 40}-{n}", "ledger", "l" * 40) for n in (1, 2))
    assert len(one) <= MAX_IDENTIFIER and len(two) <= MAX_IDENTIFIER and one != two


def test_bad_input_names_every_bad_field():
    with pytest.raises(RestoreInputInvalid) as raised:
        parse_input({"restore": "snapshot", "snapshot_arn": "arn:aws:rds:us-east-1:1:db:orders",
                     "target": {"identifier": "1-bad", "publicly_accesible": True}, "mode": "overwrite"})
    message = str(raised.value)
    for field in ("snapshot_arn", "target.identifier", "target.publicly_accesible", "mode"):
        assert field in message, field


def test_identifiers_are_stored_in_lower_case_as_rds_does():
    request = parse_input({"restore": "snapshot", "snapshot_arn": SNAPSHOT, "target": {"identifier": "Orders-DB"}})
    assert request.target.identifier == "orders-db" and request.mode == "new" and not request.keep_on_failure


def test_a_database_restore_under_another_name_needs_exactly_one_database():
    base = {"restore": "database", "policy": "nightly", "restore_point_id": "6a83367e88e07ca3",
            "target": {"arn": "arn:aws:rds:us-east-1:123456789012:db:orders-db"}}
    assert parse_database_input({**base, "databases": ["shop"], "target_database": "shop_copy"}).replace is False
    with pytest.raises(RestoreInputInvalid, match="target_database needs exactly one name"):
        parse_database_input({**base, "target_database": "shop_copy"})
    with pytest.raises(RestoreInputInvalid, match=r"target\.arn"):
        parse_database_input({**base, "target": {"arn": "arn:aws:rds:us-east-1:123456789012:snapshot:x"}})


def _e2e_policies(name_prefix: str | None = None) -> dict:
    from infra.config import parse_config
    from infra.topology import Place, build_topology, runtime_policies
    from tests.e2e.configs import CONTROL_ACCOUNT, E2E_CONFIG, REGION

    raw = E2E_CONFIG if name_prefix is None else {**E2E_CONFIG, "deployment": {"name_prefix": name_prefix}}
    config = parse_config(raw, default_account=CONTROL_ACCOUNT, default_region=REGION)
    return runtime_policies(config, build_topology(config, control=Place(CONTROL_ACCOUNT, REGION)), "arn:aws:kms:k")


ARCHIVED = {"restore": "database", "policy": "images", "restore_point_id": "6a83367e88e07ca3",
            "target": {"arn": "arn:aws:rds:us-east-1:123456789012:db:shop-db"}, "repository": "cold"}


def _plan(request: dict, name_prefix: str | None = None) -> dict:
    from rdsbackup_lambdas.restore.database import plan_database_restore

    return plan_database_restore(parse_database_input(request), _e2e_policies(name_prefix), execution_name="x",
                                 started_at="2026-01-01T00:00:00Z")


def test_a_restore_from_the_archive_is_planned_with_its_retrieval_and_the_worker_reads_the_archive():
    plan = _plan({**ARCHIVED, "retrieval_tier": "Bulk", "retrieval_days": 2})
    archive = "s3://rdsbackup-cold-123456789012-us-east-1/images"
    assert plan["image_backup"]["repository_url"] == archive
    retrieval = plan["retrieval"]
    assert (retrieval["repository"], retrieval["storage_class"], retrieval["tier"], retrieval["days"]) == (
        archive, "DEEP_ARCHIVE", "Bulk", 2)
    assert retrieval["wait"]["timeout_seconds"] == 18  # archive.retrieval_timeout_hours = 0.005
    assert _plan({**ARCHIVED, "repository": None})["retrieval"] is None  # the backup repository: no retrieval
    assert _plan(ARCHIVED)["retrieval"]["tier"] == "Standard"


def test_a_tier_the_archive_class_does_not_offer_or_a_tier_without_the_archive_is_refused():
    with pytest.raises(RestoreInputInvalid, match=r"Expedited is not offered for DEEP_ARCHIVE.*Standard, Bulk"):
        _plan({**ARCHIVED, "retrieval_tier": "Expedited"})
    with pytest.raises(RestoreInputInvalid, match=r"retrieval_tier and retrieval_days apply only to a restore from "
                                                  r"the archive repository of policy .images..*cold"):
        _plan({**ARCHIVED, "repository": None, "retrieval_tier": "Bulk"})
    with pytest.raises(RestoreInputInvalid, match="retrieval_tier"):
        parse_database_input({**ARCHIVED, "retrieval_tier": "Fast"})
    with pytest.raises(RestoreInputInvalid, match="'warm' is neither policy 'images'"):
        _plan({**ARCHIVED, "repository": "warm"})


def test_the_backup_repository_is_named_by_its_config_name_whatever_the_deployments_name_prefix():
    for prefix in (None, "acme", "main-x"):
        plan = _plan({**ARCHIVED, "repository": "main"}, name_prefix=prefix)
        assert plan["retrieval"] is None
        bucket = f"{prefix or 'rdsbackup'}-main-123456789012-us-east-1"
        assert plan["image_backup"]["repository_url"] == f"s3://{bucket}/images"
        with pytest.raises(RestoreInputInvalid, match="'warm' is neither policy 'images'"):
            _plan({**ARCHIVED, "repository": "warm"}, name_prefix=prefix)


def _ledger(member_tags: dict[str, str], *, identifier: str = "ledger", cluster_tags: dict[str, str] | None = None):
    """A two-instance Aurora cluster in moto, and the planner's view of its account and region."""
    import boto3
    from rdsbackup_lambdas.restore.databases import Databases

    rds = boto3.client("rds", region_name="us-east-1")
    rds.create_db_cluster(DBClusterIdentifier=identifier, Engine="aurora-postgresql", MasterUsername="admin_user",
                          MasterUserPassword="not-a-real-secret-1",
                          Tags=[{"Key": k, "Value": v} for k, v in (cluster_tags or {"backup": "nightly"}).items()])
    for member in (f"{identifier}-instance-1", "reader-east"):
        rds.create_db_instance(DBInstanceIdentifier=member, DBClusterIdentifier=identifier, Engine="aurora-postgresql",
                               DBInstanceClass="db.r6g.large", Tags=[{"Key": k, "Value": v}
                                                                     for k, v in member_tags.items()])
    return Databases(rds, "account 123456789012 region us-east-1")


def _plan_replace(databases, identifier: str = "ledger"):
    from rdsbackup_lambdas.restore.plan import _check_target
    from rdsbackup_lambdas.restore.replaceable import Replaceable

    request = parse_input({"restore": "snapshot", "mode": "replace", "target": {"identifier": identifier},
                           "snapshot_arn": "arn:aws:rds:us-east-1:123456789012:cluster-snapshot:rdsbackup-x"})
    restore_id = restore_id_for("run-1", "2026-11-28T03:00:00Z")
    return _check_target(databases, "cluster", request, [], restore_id,
                         Replaceable.in_place(_e2e_policies(), "123456789012", "us-east-1"))


def test_a_tag_selected_cluster_is_replaced_when_its_instances_carry_the_selection_tags_too():
    from moto import mock_aws

    with mock_aws():
        renames = _plan_replace(_ledger({"backup": "nightly"}))
    assert [(r.kind, r.original) for r in renames] == [
        ("cluster", "ledger"), ("instance", "ledger-instance-1"), ("instance", "reader-east")]


def test_a_cluster_replace_is_refused_before_any_rename_when_one_instance_may_not_be_renamed():
    from moto import mock_aws
    from rdsbackup_lambdas.errors import TargetNotReplaceable

    with mock_aws(), pytest.raises(TargetNotReplaceable, match=r"no policy selects DB instance 'ledger-instance-1' "
                                                                r"\(an instance of cluster 'ledger'\).*tag the "
                                                                r"cluster's instances"):
        _plan_replace(_ledger({}))


def test_a_named_clusters_instances_named_after_it_are_replaced_and_others_refused():
    """"orders-db" is named in the policy (a bare id: either kind): its instances named orders-db-* may be
    renamed, an instance named otherwise only with the selection tags."""
    from moto import mock_aws
    from rdsbackup_lambdas.errors import TargetNotReplaceable

    refused = "'reader-east' \\(an instance of cluster 'orders-db'\\)"
    with mock_aws(), pytest.raises(TargetNotReplaceable, match=refused):
        _plan_replace(_ledger({}, identifier="orders-db", cluster_tags={"team": "orders"}), "orders-db")


def test_an_original_whose_aside_name_is_cut_short_is_refused_when_selected_by_name():
    """Only <id>-replaced-* may be renamed back; a 60-character id is cut short to fit 63 characters."""
    from rdsbackup_lambdas.restore.replaceable import Replaceable

    long = "o" * 60
    rule = Replaceable.in_place({"p": {"selection": {"resources": [long], "targets": [
        {"account": "123456789012", "region": "us-east-1"}]}}}, "123456789012", "us-east-1")
    restore_id = restore_id_for("run-1", "2026-11-28T03:00:00Z")
    assert rule.allows("instance", long, {})
    assert not rule.allows("instance", aside_name(long, restore_id), {})
