"""Item 4 of docs/security.md: who may modify which database, and the detection of what IAM cannot limit.

Both configs: the e2e one (tag and id selection, control = production account) and the multi-account
one (a production account selecting by id, one by tag, a vault account).
"""

import json

import pytest
from moto.events.models import EventPattern

from tests.e2e.configs import CONTROL_ACCOUNT, REGION, REPLICA_REGION, TARGET_ACCOUNT
from tests.infra.conftest import PROD_A, PROD_B, VAULT, as_list, flatten, resources_of, role_statements

MODIFY = {"rds:ModifyDBInstance", "rds:ModifyDBCluster"}
RESTORED = {"StringLike": {"aws:ResourceTag/rdsbackup:restore": "restore-*"}}


def _modify_statements(template: dict, role_prefix: str) -> list[dict]:
    return [statement for role, statements in role_statements(template).items() if role.startswith(role_prefix)
            for statement in statements if MODIFY & set(as_list(statement["Action"]))]


def _grants(statements: list[dict]) -> set[tuple[tuple[str, ...], str]]:
    """(resources, condition) of each statement, resources as rendered text."""
    return {(tuple(sorted(flatten(r) for r in as_list(s["Resource"]))), json.dumps(s.get("Condition"), sort_keys=True))
            for s in statements}


def _here(account: str, region: str = REGION) -> str:
    return f"arn:<AWS::Partition>:rds:{region}:{account}:"


def test_launch_role_modifies_only_the_databases_a_policy_names(multi_templates):
    """orders selects "orders-db" in PROD_A: its ARN (either kind) and what a restore made, nothing else."""
    here = _here(PROD_A)
    statements = _modify_statements(multi_templates[f"RdsBackupAccess-{PROD_A}-{REGION}"], "rdsbackup-launch-")
    assert _grants(statements) == {
        ((here + "cluster:orders-db", here + "db:orders-db"), "null"),
        ((here + "cluster:*", here + "db:*"), json.dumps(RESTORED, sort_keys=True)),
    }


def test_launch_role_modifies_only_databases_carrying_the_selection_tags(multi_templates):
    """billing selects by backup=billing in PROD_B: any database only with that tag (aws:ResourceTag)."""
    here = _here(PROD_B)
    statements = _modify_statements(multi_templates[f"RdsBackupAccess-{PROD_B}-{REGION}"], "rdsbackup-launch-")
    by_tag = {"StringEquals": {"aws:ResourceTag/backup": "billing"}}
    assert _grants(statements) == {
        ((here + "cluster:*", here + "db:*"), json.dumps(by_tag, sort_keys=True)),
        ((here + "cluster:*", here + "db:*"), json.dumps(RESTORED, sort_keys=True)),
    }


def test_no_launch_role_modifies_any_database_unconditionally(templates, multi_templates):
    """In both configs (the e2e one selects "images" by tag): a wildcard database always has a tag condition."""
    checked = 0
    for name, template in {**templates, **multi_templates}.items():
        for statement in _modify_statements(template, "rdsbackup-launch-"):
            checked += 1
            wildcard = any(flatten(r).endswith(("db:*", "cluster:*")) for r in as_list(statement["Resource"]))
            if wildcard:
                conditions = {key for block in statement.get("Condition", {}).values() for key in block}
                assert conditions and all(key.startswith("aws:ResourceTag/") for key in conditions), (name, statement)
    assert checked >= 5
    e2e = _modify_statements(templates["RdsBackupAccess"], "rdsbackup-launch-")
    images = {"StringEquals": {"aws:ResourceTag/backup": "images"}}
    assert json.dumps(images, sort_keys=True) in {grant[1] for grant in _grants(e2e)}


def test_restore_role_renames_only_the_named_databases_their_renamed_originals_and_members(multi_templates):
    """orders names "orders-db" in PROD_A: mode replace may rename it (either kind), put it aside as
    <id>-replaced-* and back, and rename a cluster's members named after it; besides, what a restore made."""
    here = _here(PROD_A)
    statements = _modify_statements(multi_templates[f"RdsBackupAccess-{PROD_A}-{REGION}"], "rdsbackup-restore-")
    assert _grants(statements) == {
        ((here + "cluster:orders-db", here + "cluster:orders-db-replaced-*", here + "db:orders-db",
          here + "db:orders-db-*"), "null"),
        ((here + "cluster:*", here + "db:*"), json.dumps(RESTORED, sort_keys=True)),
    }


def test_restore_role_renames_only_databases_carrying_the_selection_tags(multi_templates):
    here = _here(PROD_B)
    statements = _modify_statements(multi_templates[f"RdsBackupAccess-{PROD_B}-{REGION}"], "rdsbackup-restore-")
    by_tag = {"StringEquals": {"aws:ResourceTag/backup": "billing"}}
    assert _grants(statements) == {
        ((here + "cluster:*", here + "db:*"), json.dumps(by_tag, sort_keys=True)),
        ((here + "cluster:*", here + "db:*"), json.dumps(RESTORED, sort_keys=True)),
    }


def test_a_vault_restore_role_renames_only_what_a_restore_made(multi_templates):
    here = _here(VAULT)
    statements = _modify_statements(multi_templates[f"RdsBackupReplica-{VAULT}-{REGION}"], "rdsbackup-restore-")
    assert _grants(statements) == {((here + "cluster:*", here + "db:*"), json.dumps(RESTORED, sort_keys=True))}


def test_no_role_modifies_any_database_unconditionally(templates, multi_templates):
    """Launch and restore roles of both configs: a wildcard database always has a tag condition."""
    checked = 0
    for name, template in {**templates, **multi_templates}.items():
        for statement in _modify_statements(template, "rdsbackup-"):
            checked += 1
            if any(flatten(r).endswith(":*") for r in as_list(statement["Resource"])):  # db:*, cluster:*, *
                conditions = {key for block in statement.get("Condition", {}).values() for key in block}
                assert conditions and all(key.startswith("aws:ResourceTag/") for key in conditions), (name, statement)
    assert checked >= 12


def test_restore_role_tags_a_database_only_at_its_creation_or_with_the_sweepers_mark(multi_templates):
    roles = role_statements(multi_templates[f"RdsBackupAccess-{PROD_A}-{REGION}"])
    tagging = [statement for role, statements in roles.items() if role.startswith("rdsbackup-restore-")
               for statement in statements if "rds:AddTagsToResource" in as_list(statement["Action"])
               and any(flatten(r).endswith(("db:*", "cluster:*")) for r in as_list(statement["Resource"]))]
    at_creation = {"StringLike": {"aws:RequestTag/rdsbackup:restore": "restore-*"}}
    sweepers_mark = {"StringLike": {"aws:ResourceTag/rdsbackup:restore": "restore-*"},
                     "ForAllValues:StringEquals": {"aws:TagKeys": ["rdsbackup:sweep"]}}
    assert sorted(json.dumps(s["Condition"], sort_keys=True) for s in tagging) == sorted(
        json.dumps(c, sort_keys=True) for c in (at_creation, sweepers_mark))


def _rules(template: dict) -> dict[str, dict]:
    return {logical: rule["Properties"] for logical, rule in resources_of(template, "AWS::Events::Rule").items()
            if "EventPattern" in rule["Properties"]
            and "ModifyDBInstance" in json.dumps(rule["Properties"]["EventPattern"])}


def _issuers(rule: dict) -> set[str]:
    arns = rule["EventPattern"]["detail"]["userIdentity"]["sessionContext"]["sessionIssuer"]["arn"]
    return {flatten(arn) for arn in arns}


def _check_pattern(rule: dict) -> None:
    pattern = rule["EventPattern"]
    assert pattern["source"] == ["aws.rds"]
    assert pattern["detail-type"] == ["AWS API Call via CloudTrail"]
    assert pattern["detail"]["eventSource"] == ["rds.amazonaws.com"]
    # tagging too: a database tagged rdsbackup:restore is the restore role's to rename and delete
    assert sorted(pattern["detail"]["eventName"]) == ["AddTagsToResource", "ModifyDBCluster", "ModifyDBInstance"]


@pytest.mark.parametrize("config", ["e2e", "multi"])
def test_control_rule_checks_the_launch_and_restore_roles_of_every_place(config, templates, multi_templates):
    template = (templates if config == "e2e" else multi_templates)["RdsBackupControl"]
    (rule,) = _rules(template).values()
    _check_pattern(rule)
    if config == "multi":
        expected = {f"arn:aws:iam::{account}:role/rdsbackup-{power}-{REGION}"
                    for account in (PROD_A, PROD_B) for power in ("launch", "restore")}
        expected.add(f"arn:aws:iam::{VAULT}:role/rdsbackup-restore-{REGION}")
    else:
        expected = {f"arn:aws:iam::{CONTROL_ACCOUNT}:role/rdsbackup-launch-{REGION}",
                    *(f"arn:aws:iam::{account}:role/rdsbackup-restore-{region}"
                      for account, region in ((CONTROL_ACCOUNT, REGION), (CONTROL_ACCOUNT, REPLICA_REGION),
                                              (TARGET_ACCOUNT, REGION), (TARGET_ACCOUNT, REPLICA_REGION)))}
    assert _issuers(rule) == expected
    (target,) = rule["Targets"]
    functions = resources_of(template, "AWS::Lambda::Function")
    function = functions[target["Arn"]["Fn::GetAtt"][0]]
    assert function["Properties"]["Handler"] == "rdsbackup_lambdas.handlers.watch_db_modifications.handler"
    watched = json.loads(flatten(function["Properties"]["Environment"]["Variables"]["WATCHED_ROLES"]))
    assert watched == {arn: ("launch" if "rdsbackup-launch-" in arn else "restore") for arn in expected}
    # an event the function could not take lands in a dead-letter queue (with its alarm)
    assert "DeadLetterConfig" in target and target["RetryPolicy"]["MaximumRetryAttempts"] >= 1


def test_other_places_forward_their_events_to_the_control_bus(multi_templates):
    bus = f"arn:aws:events:{REGION}:{CONTROL_ACCOUNT}:event-bus/default"
    for name, roles in ((f"RdsBackupAccess-{PROD_A}-{REGION}", {"LaunchRole", "RestoreRole"}),
                        (f"RdsBackupAccess-{PROD_B}-{REGION}", {"LaunchRole", "RestoreRole"}),
                        (f"RdsBackupReplica-{VAULT}-{REGION}", {"RestoreRole"})):
        (rule,) = _rules(multi_templates[name]).values()
        _check_pattern(rule)
        assert {arn.strip("<>").split(".")[0].rstrip("0123456789ABCDEF") for arn in _issuers(rule)} == roles
        (target,) = rule["Targets"]
        assert target["Arn"] == bus and "RoleArn" in target
    policies = resources_of(multi_templates["RdsBackupControl"], "AWS::Events::EventBusPolicy").values()
    principals = {flatten(p["Properties"]["Statement"]["Principal"]["AWS"]) for p in policies}
    assert principals == {f"arn:<AWS::Partition>:iam::{account}:root" for account in (PROD_A, PROD_B, VAULT)}
    for policy in policies:
        assert policy["Properties"]["Statement"]["Action"] == "events:PutEvents"
        assert policy["Properties"]["Statement"]["Condition"]["StringEquals"]["events:source"] == "aws.rds"


def test_the_control_place_needs_no_forwarding(templates):
    """The e2e control stack's own place is watched by the control rule; other places forward."""
    assert not _rules(templates["RdsBackupAccess"])
    for name in (f"RdsBackupAccess-{CONTROL_ACCOUNT}-{REPLICA_REGION}", f"RdsBackupReplica-{TARGET_ACCOUNT}-{REGION}"):
        (rule,) = _rules(templates[name]).values()
        assert rule["Targets"][0]["Arn"] == f"arn:aws:events:{REGION}:{CONTROL_ACCOUNT}:event-bus/default"
    policies = resources_of(templates["RdsBackupControl"], "AWS::Events::EventBusPolicy").values()
    # the same account forwards across regions without a bus policy
    assert {flatten(p["Properties"]["Statement"]["Principal"]["AWS"]) for p in policies} == {
        f"arn:<AWS::Partition>:iam::{TARGET_ACCOUNT}:root"}


def test_the_synthesized_pattern_matches_a_cloudtrail_event_of_the_role_only(multi_templates):
    """moto's EventBridge pattern matcher (what its PutEvents routes with; moto 5 leaves TestEventPattern
    unimplemented) on the control rule's pattern."""
    from tests.unit.test_db_modification_watch import cloudtrail_event

    (rule,) = _rules(multi_templates["RdsBackupControl"]).values()
    pattern = EventPattern.load(json.dumps(rule["EventPattern"]))
    launch = f"arn:aws:iam::{PROD_A}:role/rdsbackup-launch-{REGION}"
    matches = pattern.matches_event
    assert matches(cloudtrail_event(launch, {"vpcSecurityGroupIds": ["sg-1"]}, account=PROD_A))
    assert matches(cloudtrail_event(f"arn:aws:iam::{VAULT}:role/rdsbackup-restore-{REGION}",
                                    {"publiclyAccessible": True}, account=VAULT, name="ModifyDBCluster"))
    assert not matches(cloudtrail_event(f"arn:aws:iam::{PROD_A}:role/someone-else",
                                        {"publiclyAccessible": True}, account=PROD_A))
    assert not matches(cloudtrail_event(launch, {}, account=PROD_A, name="DeleteDBInstance"))
    assert matches(cloudtrail_event(f"arn:aws:iam::{PROD_A}:role/rdsbackup-restore-{REGION}", {}, account=PROD_A,
                                    name="AddTagsToResource"))
