"""The backup-account session (maintenance) state machine, assembled in one place.

One execution per policy with image-level backup, started by the policy's own schedule (daily by
default): a worker in the control account runs `rdsbackup maintain`, which archives the restore points
older than `archive.after_days` (when the policy has `archive`), applies the backup repository's
retention (forget, except what the archive does not hold yet, then prune) and the archive's retention.

    Policy given? ──no──> Fail (InvalidInput)
        │
    Session defaults (worker: null, error: null)
        │
    Start maintenance worker ──(any error)──────────────┐
        │                                               │
    Check maintenance worker <─┐                        │  caught into $.error
        │ running ─────────────┴─ Wait (growing)        │
        │ done        (any error: stopped, failed, ─────┤
        ▼              timed out)                       ▼
    Clean up maintenance worker  <──────────────────────┘   the finally: every path runs it
        │ (its own failure is caught into $.cleanup)
        ▼
    Maintenance report (DynamoDB maintenance#<session>, SNS on failure or warnings)
        │
    Failed? ──yes──> Fail (MaintenanceSessionFailed, cause = the report)
        └──no──> Succeed (output = the report)

Handlers: lambdas/rdsbackup_lambdas/handlers/{start,check,cleanup}_maintenance.py, maintenance_report.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.config import Timing
from infra.constructs.fragments import JSON_NULL, Retries, catch_into, poll_until
from infra.constructs.lambda_step import LambdaStep


@dataclass(frozen=True)
class MaintenanceSteps:
    start: LambdaStep
    check: LambdaStep
    cleanup: LambdaStep
    report: LambdaStep


class MaintenanceWorkflow(Construct):
    """Builds the definition of the maintenance state machine from its steps."""

    def __init__(self, scope: Construct, id_: str, *, steps: MaintenanceSteps, timing: Timing):
        super().__init__(scope, id_)
        retries = Retries.from_timing(timing)
        throttled = retries.throttled

        report = steps.report.task(self, "Maintenance report", result_path="$.report", payload={
            "policy.$": "$.policy",
            "execution_name.$": "$$.Execution.Name",
            "started_at.$": "$$.Execution.StartTime",
            "worker.$": "$.worker",
            "error.$": "$.error",
            "cleanup.$": "$.cleanup",
        }, retries=[throttled])
        failed = sfn.Pass(self, "Maintenance failure cause", parameters={
            "cause.$": "States.JsonToString($.report)",
        }).next(sfn.Fail(self, "Maintenance session failed", error="MaintenanceSessionFailed",
                         cause_path="$.cause"))
        report.next(sfn.Choice(self, "Maintenance failed?")
                    .when(sfn.Condition.string_equals("$.report.status", "Failed"), failed)
                    .otherwise(sfn.Succeed(self, "Maintenance done", output_path="$.report")))

        cleanup = steps.cleanup.task(self, "Clean up maintenance worker", result_path="$.cleanup",
                                     payload={"worker.$": "$.worker"}, retries=[throttled])
        catch_into(cleanup, report, result_path="$.cleanup")
        cleanup.next(report)

        start = steps.start.task(self, "Start maintenance worker", result_path="$.worker", payload={
            "policy.$": "$.policy",
            "execution_name.$": "$$.Execution.Name",
            "wait": {"initial_seconds": timing.wait_initial_seconds, "max_seconds": timing.wait_max_seconds,
                     "factor": timing.wait_factor},
        }, retries=[throttled])
        check = steps.check.task(self, "Check maintenance worker", result_path="$.worker",
                                 payload={"worker.$": "$.worker"}, retries=[throttled])
        for task in (start, check):
            catch_into(task, cleanup, result_path="$.error")
        start.next(poll_until(self, check=check, done=sfn.Condition.boolean_equals("$.worker.done", True),
                              wait_seconds_path="$.worker.wait_seconds", then=cleanup,
                              choice_name="Maintenance worker done?", wait_name="Wait for maintenance worker"))

        defaults = sfn.Pass(self, "Session defaults", parameters={
            "policy.$": "$.policy", "worker.$": JSON_NULL, "error.$": JSON_NULL, "cleanup.$": JSON_NULL,
        }).next(start)
        self.definition = sfn.Choice(self, "Policy given?").when(
            sfn.Condition.is_present("$.policy"), defaults,
        ).otherwise(sfn.Fail(self, "Invalid maintenance input", error="InvalidInput",
                             cause='The execution input must be {"policy": "<name>"}'))
