"""Who can do what (docs/security.md): each dangerous request, evaluated on the multi-account templates
with the policy evaluator (IAM semantics: explicit deny, identity + resource policy, trust), reaches
only the role whose power it is."""

import pytest

from infra.topology import Names
from tests.infra.conftest import PROD_A, PROD_B, VAULT
from tests.support.policy_evaluator import allowed, load
from tests.support.security_table import BUCKET, compute, places


@pytest.fixture(scope="module")
def rows(multi_templates):
    table, _ = compute(multi_templates)
    return {label: {title: sorted(arn.rsplit("/", 1)[1] for arn in via) for title, via in cells.items()}
            for label, cells in table.items()}


def _who(rows, title):
    return {label.split(" ")[0] + (f" {label.split(' ')[1]}" if "(" in label else "") for label, cells in rows.items()
            if cells[title]}


def test_only_retention_deletes_managed_snapshots_and_nobody_the_users_own(rows):
    assert _who(rows, "delete a managed snapshot") == {
        "rdsbackup-step-apply-retention-us-east-1 (control)", f"rdsbackup-delete-us-east-1 ({PROD_A})"}
    assert _who(rows, "delete a vault replica") == {
        "rdsbackup-step-apply-retention-us-east-1 (control)", f"rdsbackup-replica-delete-us-east-1 ({VAULT})"}
    assert _who(rows, "delete the user's own snapshot") == set()


RESTORE_STEPS = {f"rdsbackup-step-{s}-us-east-1 (control)" for s in (
    "plan-restore", "rename-original", "restore-snapshot", "create-cluster-instances", "check-restore",
    "cleanup-restore", "restore-report", "copy-snapshot", "remove-snapshot-copy")}


def test_only_replication_and_the_restore_share_snapshots(rows):
    # a restore into another account shares the managed snapshot it restores from (issue 12)
    assert _who(rows, "share a snapshot") == RESTORE_STEPS | {
        "rdsbackup-step-replicate-snapshot-us-east-1 (control)", f"rdsbackup-share-us-east-1 ({PROD_A})",
        f"rdsbackup-restore-us-east-1 ({PROD_A})"}


def test_only_the_worker_and_restore_steps_modify_databases(rows):
    # the restore renames a database aside (mode replace) through the restore role
    steps = RESTORE_STEPS | {f"rdsbackup-step-{s}-us-east-1 (control)" for s in
                             ("prepare-worker", "start-worker", "check-worker", "cleanup-worker", "sweep-orphans")}
    assert _who(rows, "modify a DB") == steps | {f"rdsbackup-launch-us-east-1 ({PROD_A})",
                                                 f"rdsbackup-restore-us-east-1 ({PROD_A})"}


def test_no_role_modifies_a_database_no_policy_selects(rows):
    """Item 4: the launch role and the restore role (mode replace renames) reach only the databases a policy
    may select, and those a restore made (before: the restore role reached every database of its place)."""
    assert _who(rows, "modify a DB no policy selects") == set()


def test_only_the_restore_steps_can_mark_a_database_as_restored(rows):
    """Residual (docs/security.md): RDS authorizes a create's tags as AddTagsToResource and offers no condition
    telling a tag at creation from a later one, so the restore role can put rdsbackup:restore on an existing
    database (which makes it renamable and deletable by that role); only the restore steps reach it."""
    assert _who(rows, "mark a DB no policy selects as restored") == RESTORE_STEPS | {
        f"rdsbackup-restore-us-east-1 ({PROD_A})"}


def test_a_worker_reads_no_other_accounts_prefix_and_only_the_backup_account_deletes(rows):
    maintenance = f"{Names().maintenance_role} (control)"  # the backup-account session: forget and prune
    assert _who(rows, f"read {PROD_B}'s repository prefix") == {f"rdsbackup-worker-us-east-1 ({PROD_B})", maintenance}
    assert _who(rows, "delete repository objects") == {maintenance}
    assert _who(rows, "change the repository bucket policy") == set()


def test_a_control_account_user_who_may_assume_any_role_reaches_nothing(rows):
    (developer,) = [cells for label, cells in rows.items() if label.startswith("developer")]
    assert not any(developer.values()), developer


def test_only_replication_and_retention_decrypt_tag_metadata(rows):
    assert _who(rows, "decrypt tag metadata") == {"rdsbackup-step-replicate-snapshot-us-east-1 (control)",
                                                  "rdsbackup-step-apply-retention-us-east-1 (control)",
                                                  "rdsbackup-step-plan-restore-us-east-1 (control)"}


def test_a_worker_reads_no_other_databases_secret_where_the_policy_names_its_databases(rows):
    assert _who(rows, "read another DB's secret") == set()


def test_only_the_backup_account_overwrites_repository_objects(rows):
    assert _who(rows, "overwrite a restore point") == {f"{Names().maintenance_role} (control)"}


@pytest.mark.parametrize(("what", "key", "context", "may"), [
    ("a new restore point (If-None-Match)", "orders/manifests/rp2",
     {"s3:ObjectCreationOperation": "true", "s3:if-none-match": "*"}, True),
    ("a pack's part (UploadPart: no conditional header)", "orders/data/p2", {"s3:ObjectCreationOperation": "false"},
     True),
    ("an existing restore point, unconditionally", "orders/manifests/rp1", {"s3:ObjectCreationOperation": "true"},
     False),
    ("its lock, refreshed in place", "orders/locks/l1", {"s3:ObjectCreationOperation": "true"}, True),
    ("a new object encrypted with another key", "orders/data/p3",
     {"s3:ObjectCreationOperation": "true", "s3:if-none-match": "*", "s3:x-amz-server-side-encryption": "aws:kms",
      "s3:x-amz-server-side-encryption-aws-kms-key-id": f"arn:aws:kms:us-east-1:{PROD_A}:key/attacker"}, False),
    ("its result document", f"rdsbackup-results/{PROD_A}/s1/db.json", {"s3:ObjectCreationOperation": "true"}, True),
])
def test_a_production_worker_puts_only_new_objects_but_its_locks_and_results(multi_templates, what, key, context,
                                                                              may):
    model = load(multi_templates, places(multi_templates))
    worker = f"arn:aws:iam::{PROD_A}:role/rdsbackup-worker-us-east-1"
    assert allowed(model, worker, "s3:PutObject", f"{BUCKET}/{key}", context) is may, what


def test_the_sweepers_launch_role_deletes_restore_test_throwaways_and_no_other_database(multi_templates):
    """The orphan sweeper (through the launch role) deletes a restore test's leftover throwaway: only a
    database named rdsbackup-test-* that carries rdsbackup:temporary=true and rdsbackup:restore-test."""
    from rdsbackup_lambdas.image.names import RESTORE_TEST_TAG, TEMPORARY_TAG

    # the names the grant is written for are the ones the Lambdas give throwaways (their THROWAWAY_PREFIX:
    # tests/infra/test_deployment_names.py)
    assert (Names().throwaway_prefix, TEMPORARY_TAG, RESTORE_TEST_TAG) == (
        "rdsbackup-test-", "rdsbackup:temporary", "rdsbackup:restore-test")

    model = load(multi_templates, places(multi_templates))
    launch = f"arn:aws:iam::{PROD_A}:role/rdsbackup-launch-us-east-1"
    here = f"arn:aws:rds:us-east-1:{PROD_A}"
    throwaway = {"aws:ResourceTag/rdsbackup:temporary": "true",
                 "aws:ResourceTag/rdsbackup:restore-test": f"{here}:db:orders-db"}
    for action, resource in (("rds:DeleteDBInstance", f"{here}:db:rdsbackup-test-0123456789abcdef"),
                             ("rds:DeleteDBInstance", f"{here}:db:rdsbackup-test-0123456789abcdef-1"),
                             ("rds:DeleteDBCluster", f"{here}:cluster:rdsbackup-test-0123456789abcdef")):
        assert allowed(model, launch, action, resource, throwaway), (action, resource)
        # the same name without the tags (a database somebody named so), or with only one of them
        assert not allowed(model, launch, action, resource, {})
        assert not allowed(model, launch, action, resource, {"aws:ResourceTag/rdsbackup:temporary": "true"})
        assert not allowed(model, launch, action, resource,
                           {"aws:ResourceTag/rdsbackup:restore-test": f"{here}:db:orders-db"})
    # the user's databases, even tagged like a throwaway
    for action, resource in (("rds:DeleteDBInstance", f"{here}:db:orders-db"),
                             ("rds:DeleteDBCluster", f"{here}:cluster:ledger")):
        assert not allowed(model, launch, action, resource, throwaway)
        assert not allowed(model, launch, action, resource, {})
    # nor their snapshots, nor a final snapshot taken while deleting
    assert not allowed(model, launch, "rds:CreateDBSnapshot", f"{here}:snapshot:final", throwaway)
