"""watch_db_modifications: a CloudTrail ModifyDB* event of the launch or restore role alerts only when it
changes more than the role's job (item 4, docs/security.md)."""

from __future__ import annotations

import json

import pytest
from rdsbackup_lambdas.handlers import watch_db_modifications

ACCOUNT, REGION = "333333333333", "us-east-1"
LAUNCH = f"arn:aws:iam::{ACCOUNT}:role/rdsbackup-launch-{REGION}"
RESTORE = f"arn:aws:iam::{ACCOUNT}:role/rdsbackup-restore-{REGION}"


def cloudtrail_event(role_arn: str, parameters: dict, *, account: str = ACCOUNT, name: str = "ModifyDBInstance",
                     error: str | None = None) -> dict:
    """An EventBridge "AWS API Call via CloudTrail" event as RDS delivers it for a call through an assumed role."""
    role_name = role_arn.rsplit("/", 1)[1]
    detail = {
        "eventVersion": "1.09",
        "userIdentity": {
            "type": "AssumedRole", "principalId": "AROAEXAMPLEROLEID:rdsbackup-demo-20261128T031500-a1b2c3",
            "arn": f"arn:aws:sts::{account}:assumed-role/{role_name}/rdsbackup-demo-20261128T031500-a1b2c3",
            "accountId": account, "accessKeyId": "ASIAEXAMPLEKEY",
            "sessionContext": {
                "sessionIssuer": {"type": "Role", "principalId": "AROAEXAMPLEROLEID", "arn": role_arn,
                                  "accountId": account, "userName": role_name},
                "attributes": {"creationDate": "2026-11-28T03:15:02Z", "mfaAuthenticated": "false"}},
        },
        "eventTime": "2026-11-28T03:15:04Z", "eventSource": "rds.amazonaws.com", "eventName": name,
        "awsRegion": REGION, "sourceIPAddress": "203.0.113.7", "userAgent": "Boto3/1.35.0 md/Botocore#1.35.0",
        "requestParameters": {"dBInstanceIdentifier": "orders-db", **parameters},
        "responseElements": None if error else {"dBInstanceIdentifier": "orders-db"},
        "requestID": "9f1c0d2e-0000-4000-8000-000000000001", "eventID": "4b6f7a28-0000-4000-8000-000000000002",
        "readOnly": False, "eventType": "AwsApiCall", "managementEvent": True, "recipientAccountId": account,
        "eventCategory": "Management",
    }
    if error:
        detail["errorCode"], detail["errorMessage"] = error, "not authorized"
    return {"version": "0", "id": "5a1e3c1d-0000-4000-8000-000000000003", "detail-type": "AWS API Call via CloudTrail",
            "source": "aws.rds", "account": account, "time": "2026-11-28T03:15:04Z", "region": REGION,
            "resources": [], "detail": detail}


@pytest.fixture
def watched(world, monkeypatch):
    monkeypatch.setenv("WATCHED_ROLES", json.dumps({LAUNCH: "launch", RESTORE: "restore"}))
    return world


def test_adding_the_temporary_security_group_is_quiet(watched, ctx):
    event = cloudtrail_event(LAUNCH, {"vpcSecurityGroupIds": ["sg-0a1b2c3d4e5f60718", "sg-0123456789abcdef0"],
                                      "applyImmediately": True, "allowMajorVersionUpgrade": False})
    assert watch_db_modifications.handler(event, ctx) == {"alert": False, "changed": []}
    assert watched.sns_messages() == []


def test_a_restore_renaming_aside_is_quiet(watched, ctx):
    event = cloudtrail_event(RESTORE, {"newDBInstanceIdentifier": "orders-db-replaced-restore-1",
                                       "applyImmediately": True})
    assert watch_db_modifications.handler(event, ctx)["alert"] is False
    assert watched.sns_messages() == []


def test_opening_a_database_alerts_naming_the_parameters_but_not_their_values(watched, ctx):
    event = cloudtrail_event(LAUNCH, {"vpcSecurityGroupIds": ["sg-0a1b2c3d4e5f60718"], "applyImmediately": True,
                                      "publiclyAccessible": True,
                                      "masterUserPassword": "HIDDEN_DUE_TO_SECURITY_REASONS"})
    result = watch_db_modifications.handler(event, ctx)
    assert result == {"alert": True, "changed": ["masterUserPassword", "publiclyAccessible"]}
    (message,) = watched.sns_messages()
    assert "orders-db" in message["Subject"] and ACCOUNT in message["Subject"]
    body = message["Message"]
    assert "masterUserPassword, publiclyAccessible" in body and LAUNCH in body and "launch role" in body
    assert "accepted by AWS" in body and "HIDDEN" not in body


def test_the_launch_role_renaming_a_database_alerts_even_when_refused(watched, ctx):
    event = cloudtrail_event(LAUNCH, {"newDBInstanceIdentifier": "orders-db-gone", "applyImmediately": True},
                             error="AccessDenied")
    assert watch_db_modifications.handler(event, ctx)["changed"] == ["newDBInstanceIdentifier"]
    (message,) = watched.sns_messages()
    assert "refused by AWS (AccessDenied)" in message["Message"]


def test_a_restore_role_disabling_deletion_protection_of_a_cluster_alerts(watched, ctx):
    event = cloudtrail_event(RESTORE, {"dBClusterIdentifier": "ledger", "deletionProtection": False,
                                       "backupRetentionPeriod": 1}, name="ModifyDBCluster")
    event["detail"]["requestParameters"].pop("dBInstanceIdentifier")
    assert watch_db_modifications.handler(event, ctx)["changed"] == ["backupRetentionPeriod", "deletionProtection"]
    (message,) = watched.sns_messages()
    assert message["Message"].startswith("ModifyDBCluster on ledger")


def test_a_role_not_watched_is_ignored(watched, ctx):
    event = cloudtrail_event(f"arn:aws:iam::{ACCOUNT}:role/dba", {"publiclyAccessible": True})
    assert watch_db_modifications.handler(event, ctx)["alert"] is False
    assert watched.sns_messages() == []


def _tagging(role_arn: str, keys: list[str]) -> dict:
    event = cloudtrail_event(role_arn, {}, name="AddTagsToResource")
    event["detail"]["requestParameters"] = {
        "resourceName": f"arn:aws:rds:{REGION}:{ACCOUNT}:db:payroll-db",
        "tags": [{"key": key, "value": f"value-of-{key}"} for key in keys]}
    return event


def test_the_restore_role_marking_its_leftover_for_the_sweeper_is_quiet(watched, ctx):
    assert watch_db_modifications.handler(_tagging(RESTORE, ["rdsbackup:sweep"]), ctx) == {"alert": False,
                                                                                         "changed": []}
    assert watched.sns_messages() == []


def test_the_restore_role_tagging_an_existing_database_as_restored_alerts(watched, ctx):
    """A database tagged rdsbackup:restore becomes the restore role's to rename and delete (docs/security.md)."""
    result = watch_db_modifications.handler(_tagging(RESTORE, ["rdsbackup:restore", "rdsbackup:sweep"]), ctx)
    assert result == {"alert": True, "changed": ["rdsbackup:restore"]}
    (message,) = watched.sns_messages()
    assert "payroll-db" in message["Subject"]
    body = message["Message"]
    assert body.startswith(f"AddTagsToResource on payroll-db in account {ACCOUNT}")
    assert "added tags it never adds to an existing database: rdsbackup:restore" in body
    assert "value-of" not in body


def test_the_launch_role_tags_no_database(watched, ctx):
    assert watch_db_modifications.handler(_tagging(LAUNCH, ["backup"]), ctx)["changed"] == ["backup"]
