"""One role per power, trusted by named principals only (issue 14 items 1-3), on the synthesized templates."""

import pytest
from rdsbackup_lambdas import powers as lambda_powers

from infra.powers import Power, power_role_arn
from infra.topology import Names, Place
from tests.e2e.configs import CONTROL_ACCOUNT, REGION, TARGET_ACCOUNT
from tests.infra.conftest import as_list, flatten, role_statements, role_trust

# Which Lambda may assume which role: the table, written out so a change to it is a decision.
EXPECTED_STEP_POWERS = {
    "watch-db-modifications": set(),  # reads CloudTrail events, publishes to the topic
    "resolve-policy": {"read"},
    "create-snapshot": {"snapshot"},
    "check-snapshot": {"read"},
    "tag-snapshot": {"snapshot"},
    "replicate-snapshot": {"share", "replica"},
    "apply-retention": {"delete", "replica-delete"},
    "prepare-worker": {"launch"},
    "start-worker": {"launch"},
    "check-worker": {"launch"},
    "cleanup-worker": {"launch"},
    "sweep-orphans": {"launch"},
    "check-rpo": {"read"},
    "acquire-lease": set(),
    "release-lease": set(),
    "session-report": set(),
    # the restore workflow and restore tests
    "plan-restore": {"restore"},
    "rename-original": {"restore"},
    "restore-snapshot": {"restore"},
    "create-cluster-instances": {"restore"},
    "check-restore": {"restore"},
    "cleanup-restore": {"restore"},
    "restore-report": {"restore"},
    "copy-snapshot": {"restore"},
    "remove-snapshot-copy": {"restore"},
    "plan-database-restore": set(),
    # archive retrieval: the archive is in the control account (tests/infra/test_archive_retrieval.py)
    "request-archive-retrieval": set(),
    "check-archive-retrieval": set(),
    "plan-restore-test": {"read"},
    "prepare-restore-test": {"launch"},  # the test worker's groups, a SQL Server point's temporary bucket
    "locate-throwaway": {"read"},
    "delete-throwaway": {"restore"},
    "restore-test-report": set(),
    # the backup-account session runs in the control account: it assumes nothing elsewhere
    "start-maintenance": set(),
    "check-maintenance": set(),
    "cleanup-maintenance": set(),
    "maintenance-report": set(),
}
POWER_ROLE = r"rdsbackup-(read|snapshot|share|delete|launch|restore|replica|replica-delete)-[a-z0-9-]+"


def _power_of(role_arn: str) -> str:
    name = role_arn.rsplit("/", 1)[1]
    region = next(r for r in ("us-east-1", "eu-west-1") if name.endswith(r))
    return name.removeprefix("rdsbackup-").removesuffix("-" + region)


def _assumable(statements) -> set[str]:
    return {flatten(r) for s in statements if "sts:AssumeRole" in as_list(s["Action"]) for r in as_list(s["Resource"])}


def _step(role_name: str) -> str:
    return role_name.removeprefix("rdsbackup-step-").removesuffix(f"-{REGION}")


def test_each_lambda_assumes_only_the_roles_of_its_powers(control_template):
    table = {_step(name): {_power_of(arn) for arn in _assumable(statements)}
             for name, statements in role_statements(control_template).items() if name.startswith("rdsbackup-step-")}
    assert table == EXPECTED_STEP_POWERS


def test_no_role_holds_two_destructive_powers(templates):
    """Delete, share, snapshot and launch each live in a role of their own."""
    powers = {"rds:DeleteDBSnapshot": "delete", "rds:ModifyDBSnapshotAttribute": "share",
              "rds:CreateDBSnapshot": "snapshot", "ecs:RunTask": "launch", "rds:ModifyDBInstance": "launch"}
    for name, template in templates.items():
        for role, statements in role_statements(template).items():
            held = {powers[a] for s in statements for a in as_list(s["Action"]) if a in powers}
            # the share role deletes its own staging copies (named *-staging): still one power
            if role.startswith("rdsbackup-share-"):
                held.discard("delete")
            # the restore power (issue 12) shares the snapshot it restores from, deletes only its own
            # copies (rdsbackup-restore-*) and renames databases aside: one job, its own steps
            if role.startswith("rdsbackup-restore-"):
                continue
            assert len(held) <= 1, (name, role, held)


def test_roles_in_other_accounts_trust_only_the_step_roles_that_need_them(templates):
    seen = set()
    for name, template in templates.items():
        if name == "RdsBackupControl":
            continue
        for role, trust in role_trust(template).items():
            if not role.startswith("rdsbackup-") or role.startswith("rdsbackup-worker-"):
                continue  # the worker's task role trusts ECS tasks
            (statement,) = trust
            power = _power_of(f"role/{role}")
            seen.add(power)
            assert flatten(statement["Principal"]["AWS"]) == f"arn:<AWS::Partition>:iam::{CONTROL_ACCOUNT}:root"
            allowed = {_step(arn.rsplit("/", 1)[1]) for arn in statement["Condition"]["ArnEquals"]["aws:PrincipalArn"]}
            assert allowed == {step for step, needs in EXPECTED_STEP_POWERS.items() if power in needs}, role
    assert seen == {"read", "snapshot", "share", "delete", "launch", "restore", "replica", "replica-delete"}


def test_organization_id_from_config_is_required_of_callers(tmp_path):
    from infra.constructs.power_roles import Trust

    trust = Trust(control=Place(CONTROL_ACCOUNT, REGION), organization_id="o-abcdefghij")
    conditions = trust.principal(Power.DELETE).policy_fragment.conditions
    assert conditions["StringEquals"] == {"aws:PrincipalOrgID": "o-abcdefghij"}
    assert conditions["ArnEquals"]["aws:PrincipalArn"] == [
        f"arn:aws:iam::{CONTROL_ACCOUNT}:role/rdsbackup-step-apply-retention-{REGION}"]


# the default prefix, and a deployment's own (config deployment.name_prefix) with a hyphen in it
PREFIXES = [Names(), Names("blue-dr")]


@pytest.mark.parametrize("names", PREFIXES, ids=lambda names: names.prefix)
@pytest.mark.parametrize("power", ["read", "snapshot", "share", "delete", "launch"])
def test_lambdas_find_the_role_infra_names_for_each_production_power(power, names):
    place = Place(TARGET_ACCOUNT, "eu-west-1")
    assert lambda_powers.role_for(names.access_role_arn(place), power) == power_role_arn(Power(power), place, names)


@pytest.mark.parametrize("names", PREFIXES, ids=lambda names: names.prefix)
@pytest.mark.parametrize("power", ["replica", "replica-delete"])
def test_lambdas_find_the_role_infra_names_for_each_replica_power(power, names):
    place = Place(TARGET_ACCOUNT, "eu-west-1")
    assert lambda_powers.role_for(names.replica_role_arn(place), power) == power_role_arn(Power(power), place, names)


@pytest.mark.parametrize("names", PREFIXES, ids=lambda names: names.prefix)
def test_staging_role_is_found_in_the_target_region(names):
    read = names.access_role_arn(Place(TARGET_ACCOUNT, "us-east-1"))
    assert lambda_powers.role_for(read, "share", "eu-west-1") == power_role_arn(
        Power.SHARE, Place(TARGET_ACCOUNT, "eu-west-1"), names)


def _statements_with(template, role_prefix, action):
    return [s for role, statements in role_statements(template).items() if role.startswith(role_prefix)
            for s in statements if action in as_list(s["Action"])]


def test_deleting_needs_the_managed_tag(templates):
    for name, template in templates.items():
        for action, key in (("rds:DeleteDBSnapshot", "rds:snapshot-tag/rdsbackup:managed"),
                            ("rds:DeleteDBClusterSnapshot", "rds:cluster-snapshot-tag/rdsbackup:managed")):
            for statement in _statements_with(template, "rdsbackup-", action):
                resources = [flatten(r).split(":")[-1] for r in as_list(statement["Resource"])]
                if all(r.startswith("rdsbackup-restore-") for r in resources):
                    continue  # the restore's own temporary copies (infra.constructs.restore_role)
                assert statement["Condition"]["StringEquals"] == {key: "true"}, name


def test_security_groups_are_created_only_tagged_temporary(templates):
    access = templates["RdsBackupAccess"]
    create = _statements_with(access, "rdsbackup-launch-", "ec2:CreateSecurityGroup")
    on_group = [s for s in create if flatten(s["Resource"]).endswith("security-group/*")]
    assert on_group and all(s["Condition"]["StringEquals"] == {"aws:RequestTag/rdsbackup:temporary": "true"}
                            for s in on_group)
    assert all("rdsbackup:temporary" in s["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"] for s in on_group)


def test_an_existing_group_cannot_be_tagged_temporary(templates):
    tagging = _statements_with(templates["RdsBackupAccess"], "rdsbackup-launch-", "ec2:CreateTags")
    assert len(tagging) == 2
    for statement in tagging:
        condition = statement["Condition"]
        at_creation = condition.get("StringEquals", {}).get("ec2:CreateAction") == "CreateSecurityGroup"
        sweeper_mark_on_temporary = (
            condition.get("StringEquals") == {"aws:ResourceTag/rdsbackup:temporary": "true"}
            and condition["ForAllValues:StringEquals"]["aws:TagKeys"] == ["rdsbackup:sweep"])
        assert at_creation or sweeper_mark_on_temporary, condition


def test_worker_launch_is_bound_to_the_worker_cluster_and_ecs(templates):
    access = templates["RdsBackupAccess"]
    (run,) = _statements_with(access, "rdsbackup-launch-", "ecs:RunTask")
    assert flatten(run["Condition"]["ArnEquals"]["ecs:cluster"]).endswith(":cluster/rdsbackup-workers")
    (passing,) = _statements_with(access, "rdsbackup-launch-", "iam:PassRole")
    assert passing["Condition"] == {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}


def test_kms_grants_only_for_aws_resources(templates):
    for name, template in templates.items():
        for role, statements in role_statements(template).items():
            for statement in statements:
                if "kms:CreateGrant" in as_list(statement["Action"]):
                    assert statement["Condition"]["Bool"] == {"kms:GrantIsForAWSResource": "true"}, (name, role)

