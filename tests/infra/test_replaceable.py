"""Mode "replace" renames only what the restore role may modify: the planner's rule
(`rdsbackup_lambdas.restore.replaceable`, read from the shipped policies) and the restore roles' IAM
statements (evaluated by the policy evaluator) agree, name by name, in every place of both configs."""

import re

import pytest
from rdsbackup_lambdas.restore.replaceable import Replaceable

from tests.e2e.configs import CONTROL_ACCOUNT, REGION
from tests.infra.conftest import PROD_A, PROD_B, VAULT, deployed_policies
from tests.support.policy_evaluator import allowed, load
from tests.support.security_table import places

# (kind, identifier, the database's own tags): named and renamed, cluster members, selected by tags,
# made by a restore, and near misses of each
PROBES = [
    ("instance", "orders-db", {}), ("cluster", "orders-db", {}),
    ("instance", "orders-db-replaced-0a1b2c", {}), ("cluster", "orders-db-replaced-0a1b2c", {}),
    ("instance", "orders-db-instance-1", {}), ("instance", "orders-dbx", {}), ("cluster", "orders-db-2", {}),
    ("instance", "payroll-db", {"team": "payroll"}), ("cluster", "payroll", {}),
    ("instance", "billing-1", {"backup": "billing"}), ("cluster", "billing", {"backup": "billing"}),
    ("instance", "billing-2", {"backup": "billing-old"}),
    ("cluster", "ledger", {"backup": "nightly"}), ("instance", "ledger-1", {}),
    ("instance", "shop-db", {"backup": "images"}), ("instance", "fleet-7", {"backup": "fleet", "team": "x"}),
    ("instance", "copy", {"rdsbackup:restore": "restore-20260101T000000-abcdef"}),
    ("cluster", "copy", {"rdsbackup:restore": "restore-20260101T000000-abcdef"}),
    ("instance", "fake", {"rdsbackup:restore": "not-a-restore"}),
]


def _restore_roles(templates: dict) -> dict[str, tuple[str, str]]:
    """The restore role of each place: its ARN -> (account, region)."""
    roles = {}
    for stack, (account, region) in places(templates).items():
        for resource in templates[stack]["Resources"].values():
            name = resource.get("Properties", {}).get("RoleName") if resource["Type"] == "AWS::IAM::Role" else None
            if isinstance(name, str) and re.fullmatch(r"rdsbackup-restore-[a-z0-9-]+", name):
                roles[f"arn:aws:iam::{account}:role/{name}"] = (account, region)
    return roles


@pytest.mark.parametrize("config", ["e2e", "multi"])
def test_the_planner_allows_exactly_the_renames_the_restore_role_may_make(config, cdk_out, templates, multi_cdk_out,
                                                                          multi_templates):
    out, synthesized = (cdk_out, templates) if config == "e2e" else (multi_cdk_out, multi_templates)
    policies = deployed_policies(out, synthesized["RdsBackupControl"])
    model = load(synthesized, places(synthesized))
    roles = _restore_roles(synthesized)
    expected_places = ({(PROD_A, REGION), (PROD_B, REGION), (VAULT, REGION)} if config == "multi"
                       else {(CONTROL_ACCOUNT, REGION)})
    assert expected_places <= set(roles.values())
    allowed_somewhere = refused_somewhere = 0
    for role, (account, region) in roles.items():
        rule = Replaceable.in_place(policies, account, region)
        for kind, identifier, tags in PROBES:
            arn = f"arn:aws:rds:{region}:{account}:{'db' if kind == 'instance' else 'cluster'}:{identifier}"
            action = "rds:ModifyDBInstance" if kind == "instance" else "rds:ModifyDBCluster"
            context = {f"aws:ResourceTag/{key}": value for key, value in tags.items()}
            iam = allowed(model, role, action, arn, context)
            assert rule.allows(kind, identifier, tags) is iam, (role, kind, identifier, tags, iam)
            allowed_somewhere += iam
            refused_somewhere += not iam
    assert allowed_somewhere and refused_somewhere


def test_what_each_place_may_rename_in_the_multi_account_config(multi_cdk_out, multi_templates):
    policies = deployed_policies(multi_cdk_out, multi_templates["RdsBackupControl"])

    def renamable(account):
        rule = Replaceable.in_place(policies, account, REGION)
        return {(kind, identifier) for kind, identifier, tags in PROBES if rule.allows(kind, identifier, tags)}

    restored = {("instance", "copy"), ("cluster", "copy")}
    # orders names "orders-db" in PROD_A: either kind, its renamed originals, a cluster's members named after it
    assert renamable(PROD_A) == restored | {
        ("instance", "orders-db"), ("cluster", "orders-db"), ("instance", "orders-db-replaced-0a1b2c"),
        ("cluster", "orders-db-replaced-0a1b2c"), ("instance", "orders-db-instance-1")}
    # billing selects backup=billing in PROD_B
    assert renamable(PROD_B) == restored | {("instance", "billing-1"), ("cluster", "billing")}
    # no policy selects anything in the vault: only what a restore made there
    assert renamable(VAULT) == restored
