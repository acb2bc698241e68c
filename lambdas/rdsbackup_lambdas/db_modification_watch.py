"""Detection for what IAM cannot limit: the launch and restore roles may call ModifyDBInstance and
ModifyDBCluster, and IAM has no condition on the call's parameters.

The launch role only ever adds and removes the worker's temporary DB security group
(``VpcSecurityGroupIds``, ``ApplyImmediately``); the restore role only renames a database aside and back
(mode replace: ``NewDBInstanceIdentifier``/``NewDBClusterIdentifier``, ``ApplyImmediately``). Any other
parameter in a CloudTrail ``ModifyDB*`` event of these roles (a password, public access, backup retention,
deletion protection...) is a compromised or misbehaving step: one SNS message says who changed what.
Parameter names only, never their values (a password must not travel in a notification).

Tags too: RDS authorizes the tags of a create as ``AddTagsToResource`` and cannot tell them from a later
tag, so the restore role may tag an existing database ``rdsbackup:restore``, which makes it that role's to
rename and delete. Tags given at creation travel in the create call's own event; after creation the
restore role only marks its leftovers ``rdsbackup:sweep``, the launch role tags no database. An
``AddTagsToResource`` event of these roles with any other key alerts (keys only, never values).
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas import aws_sessions
from rdsbackup_lambdas.observability import logger

# The parameters each power's steps send (CloudTrail's requestParameters spelling); the identifier of the
# database modified is not a change.
EXPECTED_CHANGES = {
    "launch": frozenset({"vpcSecurityGroupIds", "applyImmediately"}),
    "restore": frozenset({"newDBInstanceIdentifier", "newDBClusterIdentifier", "applyImmediately"}),
}
IDENTIFIERS = frozenset({"dBInstanceIdentifier", "dBClusterIdentifier"})
TAGGING = "AddTagsToResource"
# The tag keys each power's steps add to an existing database (rdsbackup_lambdas.restore.databases.LEFTOVER_TAG).
EXPECTED_TAGS = {"launch": frozenset(), "restore": frozenset({"rdsbackup:sweep"})}
# Values that change nothing whoever sends them: allowMajorVersionUpgrade=false only forbids an upgrade
# (the console sends it with every modification).
INERT = {"allowMajorVersionUpgrade": False}
_SUBJECT_MAX = 100


def unexpected_changes(detail: dict[str, Any], watched_roles: dict[str, str]) -> tuple[str | None, list[str]]:
    """The watched role's power and the parameters of this call it should never send (sorted)."""
    issuer = (((detail.get("userIdentity") or {}).get("sessionContext") or {}).get("sessionIssuer") or {})
    power = watched_roles.get(issuer.get("arn", ""))
    if power is None:
        return None, []
    parameters = detail.get("requestParameters") or {}
    if detail.get("eventName") == TAGGING:
        keys = {str(tag.get("key")) for tag in parameters.get("tags") or [] if isinstance(tag, dict)}
        return power, sorted(keys - EXPECTED_TAGS[power])
    expected = EXPECTED_CHANGES[power] | IDENTIFIERS
    return power, sorted(name for name, value in parameters.items()
                         if name not in expected and not (name in INERT and INERT[name] == value))


def check_event(event: dict[str, Any], watched_roles: dict[str, str], topic_arn: str) -> dict[str, Any]:
    """Publish one SNS message when a watched role's ModifyDB* call changes more than its job needs."""
    detail = event.get("detail") or {}
    power, changed = unexpected_changes(detail, watched_roles)
    if not changed:
        return {"alert": False, "changed": []}
    issuer = detail["userIdentity"]["sessionContext"]["sessionIssuer"]["arn"]
    parameters = detail.get("requestParameters") or {}
    database = (parameters.get("dBInstanceIdentifier") or parameters.get("dBClusterIdentifier")
                or str(parameters.get("resourceName") or "?").rsplit(":", 1)[-1])
    account = detail.get("recipientAccountId") or event.get("account", "?")
    region = detail.get("awsRegion") or event.get("region", "?")
    outcome = (f"refused by AWS ({detail['errorCode']})" if detail.get("errorCode")
               else "accepted by AWS: the change is made or pending")
    lines = [
        f"{detail.get('eventName')} on {database} in account {account} region {region} by {issuer} ({power} role)",
        (f"added tags it never adds to an existing database: {', '.join(changed)} (a database tagged "
         "rdsbackup:restore is the restore role's to rename and delete)" if detail.get("eventName") == TAGGING
         else f"changed parameters it never sends: {', '.join(changed)}"),
        f"call {outcome}",
        f"at {detail.get('eventTime')} from {detail.get('sourceIPAddress')}; CloudTrail event {detail.get('eventID')}",
        "The step that holds this role only changes a database's security groups (launch) or renames it aside "
        "(restore): treat the control account's step role as compromised and review the database "
        "(docs/security.md, item 4).",
    ]
    subject = f"rds-backup: unexpected change of {database} ({account}/{region})"
    aws_sessions.client("sns", topic_arn.split(":")[3]).publish(
        TopicArn=topic_arn, Subject=subject[:_SUBJECT_MAX], Message="\n".join(lines))
    logger.warning("unexpected database modification", extra={"database": database, "account": account,
                                                              "role": issuer, "changed": changed})
    return {"alert": True, "changed": changed}
