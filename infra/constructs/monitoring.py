"""What an operator watches: the hourly RPO check, an alarm per policy, and the deployment's dashboard."""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from constructs import Construct

from infra.config import Policy
from infra.constructs.lambda_step import LambdaStep
from infra.topology import Names, names_of

NAMESPACE = "rdsbackup"
# Metrics the handlers emit as EMF through Powertools carry its "service" dimension.
_SERVICE = {"service": "rdsbackup"}
_DAY = Duration.days(1)
_HOUR = Duration.hours(1)


def alarm_name(policy: str, names: Names) -> str:
    return names("rpo", policy)


def _metric(name: str, *, statistic: str = "Sum", period: Duration = _DAY, label: str | None = None,
            dimensions: dict[str, str] | None = None) -> cloudwatch.Metric:
    return cloudwatch.Metric(namespace=NAMESPACE, metric_name=name, statistic=statistic, period=period,
                             label=label or name, dimensions_map=dimensions or _SERVICE)


class Monitoring(Construct):
    """The RPO check (``check_rpo`` every hour), ``RpoAlarm-<policy>`` and the dashboard (named by the prefix).

    ``check_rpo`` is a :class:`LambdaStep` made by the caller (it needs the policies, table and topic);
    this construct schedules it, lets it publish its metric, and alarms on that metric per policy.
    """

    def __init__(self, scope: Construct, id_: str, *, policies: list[Policy], check_rpo: LambdaStep,
                 topic: sns.ITopic):
        super().__init__(scope, id_)
        self.names = names_of(self)
        check_rpo.role.add_to_policy(iam.PolicyStatement(
            actions=["cloudwatch:PutMetricData"], resources=["*"],
            conditions={"StringEquals": {"cloudwatch:namespace": NAMESPACE}}))
        rule = events.Rule(self, "RpoCheckSchedule", schedule=events.Schedule.rate(_HOUR),
                           description="rds-backup: find sources without a successful backup within their RPO")
        rule.add_target(targets.LambdaFunction(check_rpo.function, retry_attempts=2))
        self.alarms: dict[str, cloudwatch.Alarm] = {}
        for policy in policies:
            alarm = cloudwatch.Alarm(
                self, f"RpoAlarm-{policy.name}",
                alarm_name=alarm_name(policy.name, self.names),
                alarm_description=(f"rds-backup policy {policy.name}: a selected source has no successful backup "
                                   f"newer than its RPO ({policy.rpo_seconds / 3600:g} h), or the hourly check "
                                   "could not run; the SNS message of the check names the sources"),
                metric=self.outside_rpo(policy.name),
                threshold=1, evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                # no data means the check did not run or could not check the policy: that is an alarm too
                treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
            )
            alarm.add_alarm_action(actions.SnsAction(topic))
            alarm.add_ok_action(actions.SnsAction(topic))
            self.alarms[policy.name] = alarm
        self.dashboard = self._dashboard(self.names.prefix, policies)

    @staticmethod
    def outside_rpo(policy: str) -> cloudwatch.Metric:
        # two hours: one missed hourly run is not yet "no data"
        return cloudwatch.Metric(namespace=NAMESPACE, metric_name="SourcesOutsideRpo", statistic="Maximum",
                                 period=Duration.hours(2), dimensions_map={"Policy": policy})

    def _dashboard(self, name: str, policies: list[Policy]) -> cloudwatch.Dashboard:
        dashboard = cloudwatch.Dashboard(self, "Dashboard", dashboard_name=name,
                                         default_interval=Duration.days(14))
        dashboard.add_widgets(cloudwatch.TextWidget(
            markdown="# rds-backup\nSessions, bytes, durations, restore tests and RPO, per day "
                     "(RPO per hour). Failures are also published to the SNS topic.", width=24, height=2))
        dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Sessions by status", stacked=True, width=8, left=[
                _metric("SessionsSuccess", label="Success"), _metric("SessionsWarning", label="Warning"),
                _metric("SessionsFailed", label="Failed")]),
            cloudwatch.GraphWidget(title="Failed resources", width=8, left=[_metric("Failures")]),
            cloudwatch.GraphWidget(title="Backup duration per resource (s)", width=8, left=[
                _metric("DurationSeconds", statistic="Average", label="average"),
                _metric("DurationSeconds", statistic="Maximum", label="maximum")]),
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Bytes per day", width=8, left=[
                _metric("BytesBackedUp", label="backed up (restore points, logical)"),
                _metric("BytesAdded", label="added to the repository (new, stored)")]),
            cloudwatch.GraphWidget(title="Restore tests", stacked=True, width=8, left=[
                _metric("RestoreTestPassed", label="passed"), _metric("RestoreTestFailed", label="failed")]),
            cloudwatch.GraphWidget(title="Restore test: time to restore and total (s)", width=8, left=[
                _metric("TimeToRestoreSeconds", statistic="Maximum", label="time to restore (RTO)"),
                _metric("RestoreTestDurationSeconds", statistic="Maximum", label="whole test")]),
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Sources outside their RPO", width=16,
                                   left=[self.outside_rpo(p.name).with_(label=p.name) for p in policies]),
            # by name, not by reference: the widget needs no attribute of the alarm resources
            cloudwatch.AlarmStatusWidget(title="RPO alarms", width=8, alarms=[
                cloudwatch.Alarm.from_alarm_arn(self, f"RpoAlarmRef-{name}", Stack.of(self).format_arn(
                    service="cloudwatch", resource="alarm", resource_name=alarm_name(name, self.names),
                    arn_format=ArnFormat.COLON_RESOURCE_NAME))
                for name in self.alarms]),
        )
        return dashboard
