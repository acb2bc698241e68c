"""Detection of database modifications IAM cannot prevent (docs/security.md, item 4).

The launch role changes a database's security groups and the restore role renames a database aside;
IAM can limit which databases (by ARN or tag) but not which parameters of ModifyDBInstance/ModifyDBCluster.
CloudTrail delivers each call to the default event bus of the account and region where it was made (the
production account), so:

- each production (and replica-target) place forwards its ModifyDB* events of these roles (and their
  AddTagsToResource events: a database tagged rdsbackup:restore becomes the restore role's to rename and
  delete) to the control account's default bus (a rule in the access stack; nothing else leaves the account);
- the control stack's rule sends them to ``watch_db_modifications``, which publishes to the SNS topic when
  a call changes anything but what the role's job sends.

The checking Lambda, its topic and key stay in the control account: a production account never needs
publish rights on the topic or its key, and a production admin who disables the forwarding rule there is
the residual risk documented in docs/security.md.
"""

from __future__ import annotations

import json

from aws_cdk import CfnResource, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from constructs import Construct

from infra.constructs.dead_letters import DeadLetters
from infra.constructs.lambda_step import LambdaStep
from infra.topology import Place, names_of

WATCHED_CALLS = ["ModifyDBInstance", "ModifyDBCluster", "AddTagsToResource"]


def modification_pattern(role_arns: list[str]) -> events.EventPattern:
    """CloudTrail's ModifyDBInstance/ModifyDBCluster/AddTagsToResource events made through one of `role_arns`."""
    return events.EventPattern(
        source=["aws.rds"], detail_type=["AWS API Call via CloudTrail"],
        detail={"eventSource": ["rds.amazonaws.com"], "eventName": WATCHED_CALLS,
                "userIdentity": {"sessionContext": {"sessionIssuer": {"arn": role_arns}}}})


def default_bus_arn(place: Place) -> str:
    return f"arn:aws:events:{place.region}:{place.account}:event-bus/default"


class ForwardDbModifications(Construct):
    """In a production or replica-target place: the ModifyDB* events of `role_arns` go to the control bus."""

    def __init__(self, scope: Construct, id_: str, *, role_arns: list[str], control: Place):
        super().__init__(scope, id_)
        bus = events.EventBus.from_event_bus_arn(self, "ControlBus", default_bus_arn(control))
        self.rule = events.Rule(
            self, "Rule", event_pattern=modification_pattern(role_arns),
            description="rds-backup: forward the launch/restore roles' ModifyDB* calls to the control account")
        self.rule.add_target(targets.EventBus(bus))


class DbModificationWatch(Construct):
    """In the control stack: the rule on the default bus (local and forwarded events) targeting the
    checking step (with a dead-letter queue and its alarm), and the bus policy letting the other accounts
    forward."""

    def __init__(self, scope: Construct, id_: str, *, step: LambdaStep, watched_roles: dict[str, str],
                 forwarding_accounts: list[str], topic: sns.ITopic, key: kms.IKey):
        super().__init__(scope, id_)
        stack, rule_name = Stack.of(self), names_of(self)("dbwatch")
        self.dead_letters = DeadLetters(self, "DeadLetters", topic=topic, key=key, rule_name=rule_name,
                                        what="checking a database modification")
        self.rule = events.Rule(
            self, "Rule", event_pattern=modification_pattern(sorted(watched_roles)), rule_name=rule_name,
            description="rds-backup: check the launch/restore roles' ModifyDB* calls (local and forwarded)")
        self.rule.add_target(targets.LambdaFunction(step.function, retry_attempts=4,
                                                    dead_letter_queue=self.dead_letters.queue))
        for account in sorted(set(forwarding_accounts)):
            # a plain AWS::Events::EventBusPolicy (the L1 class warns about its deprecated Principal
            # property, the L2 cannot render an account principal in Python)
            CfnResource(self, f"From{account}", type="AWS::Events::EventBusPolicy", properties={
                "EventBusName": "default", "StatementId": names_of(self)("dbwatch", account),
                "Statement": {
                    "Effect": "Allow", "Principal": {"AWS": f"arn:{stack.partition}:iam::{account}:root"},
                    "Action": "events:PutEvents",
                    "Resource": f"arn:{stack.partition}:events:{stack.region}:{stack.account}:event-bus/default",
                    # only RDS's CloudTrail events (all the forwarding rule sends)
                    "Condition": {"StringEquals": {"events:source": "aws.rds",
                                                   "events:detail-type": "AWS API Call via CloudTrail"}}}})


def watched_roles_env(watched_roles: dict[str, str]) -> str:
    """The step's WATCHED_ROLES: role ARN -> the power whose parameters it may send."""
    return json.dumps(watched_roles, sort_keys=True, separators=(",", ":"))
