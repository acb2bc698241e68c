"""A dead-letter queue for an EventBridge rule's target, with an alarm to the topic when anything lands in
it: an event the target could not take (after EventBridge's retries) is never dropped silently."""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.nag import acknowledge


class DeadLetters(Construct):
    """`queue` (encrypted with `key`, TLS-only, kept 14 days) and `alarm` (a message visible) publishing to
    `topic`. Only the rule named `rule_name` (this account and region) may use the key to send here."""

    def __init__(self, scope: Construct, id_: str, *, topic: sns.ITopic, key: kms.IKey, rule_name: str, what: str):
        super().__init__(scope, id_)
        stack = Stack.of(self)
        self.queue = sqs.Queue(self, "Queue", encryption=sqs.QueueEncryption.KMS, encryption_master_key=key,
                               enforce_ssl=True, retention_period=Duration.days(14))
        # the rule by its ARN (named, not referenced: the key policy would otherwise depend on the rule,
        # which depends on this queue, which depends on the key)
        rule_arn = f"arn:{stack.partition}:events:{stack.region}:{stack.account}:rule/{rule_name}"
        key.grant(iam.ServicePrincipal("events.amazonaws.com", conditions={
            "ArnEquals": {"aws:SourceArn": rule_arn}, "StringEquals": {"aws:SourceAccount": stack.account}}),
            "kms:Decrypt", "kms:GenerateDataKey")
        acknowledge(self.queue, "AwsSolutions-SQS3", "This queue is itself the dead-letter queue of an "
                                                     "EventBridge target.")
        self.alarm = cloudwatch.Alarm(
            self, "Alarm", alarm_name=f"{rule_name}-dead-letters",
            alarm_description=f"rds-backup: {what} failed after its retries (the event is in the dead-letter queue)",
            metric=self.queue.metric_approximate_number_of_messages_visible(period=Duration.minutes(5),
                                                                           statistic="Maximum"),
            threshold=1, evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING)
        self.alarm.add_alarm_action(actions.SnsAction(topic))
