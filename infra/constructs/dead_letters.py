"""A dead-letter queue for an EventBridge target, with an alarm to the topic when anything lands in it:
an event the target could not take (after EventBridge's retries) is never dropped silently."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.nag import acknowledge


class DeadLetters(Construct):
    """`queue` (SSE, TLS-only, kept 14 days) and `alarm` (a message visible) publishing to `topic`."""

    def __init__(self, scope: Construct, id_: str, *, topic: sns.ITopic, what: str):
        super().__init__(scope, id_)
        # SQS-managed encryption: EventBridge writes here without a key-policy grant to the events service
        self.queue = sqs.Queue(self, "Queue", encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True,
                               retention_period=Duration.days(14))
        acknowledge(self.queue, "AwsSolutions-SQS3", "This queue is itself the dead-letter queue of an "
                                                     "EventBridge target.")
        self.alarm = cloudwatch.Alarm(
            self, "Alarm", alarm_description=f"rds-backup: {what} failed after its retries (the event is in "
                                             "the dead-letter queue)",
            metric=self.queue.metric_approximate_number_of_messages_visible(period=Duration.minutes(5),
                                                                           statistic="Maximum"),
            threshold=1, evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING)
        self.alarm.add_alarm_action(actions.SnsAction(topic))
