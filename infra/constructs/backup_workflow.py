"""The backup workflow, assembled in one place: a session and one execution per resource. Reading this file
tells the whole flow.

Session (`BackupStateMachine`): its history and every payload stay the same size whatever the number of
resources; the items and the results live in S3 and DynamoDB.

    Policy given? ──no──> Fail (InvalidInput)
    Resolve policy ──(fails)──> Report failed session ──> Fail
         │  (items -> s3://<sessions bucket>/sessions/<id>/items.json)
         ▼
    Distributed Map: each item of items.json (MaxConcurrencyPath = policy concurrency)
    │  Back up resource: start the resource's execution, named <session id>-<item index>, and wait
    │     └─(it failed, timed out, was stopped)─> Resource execution failed (the report finds no result)
    ▼
    Session report ──> Session failed? ──yes──> Fail (cause = the summary)
                             └─no──> Succeed (output = the summary; the full report is in S3)

Resource (`ResourceBackupStateMachine`, one execution per resource; input = its ITEM):

    Acquire lease ──(LeaseHeld…)──────────────────────────────────────────────┐
       │                                                                       │
    Create snapshot ─> Snapshot started? ─no─> Wait for slot ─┐ (quota full:  │
       ▲                   │ yes                              │  fails at once)│
       └───────────────────┼──────────────────────────────────┘                │
    Check snapshot <─┐     ▼                                                   │
       │ not ready ──┴─ Wait (growing interval)                                │
       ▼ ready                                                                 │
    Tag snapshot ─> Replicate? ─yes─> Replicate snapshot <─┐ (copy slot, stage,│
                       │ no                │ not done ─────┴─ Wait  share, copy)│
                       ▼                   ▼ done                              │
                  Image backup? <──────────┘                                   │
                   │ yes                   │ no                                │
    Prepare worker ─> Start worker ─> Check worker <─┐                         │
         (any failure: to cleanup)        │ running ─┴─ Wait                   │
                                          ▼ done     │                         │
                                   Clean up worker   │                         │
                                   failed? ─no─> Apply retention               │
                                     │ yes               │                     │
                  (any error in the steps above is caught into $.error ...)    │
                                     ▼                   ▼                     │
                                Release lease <──────────┴─────────────────────┘
                (... so this always runs: lease and slots given back, the result recorded;
                 the execution's output is the result)

Handlers are described in docs/state-machine-contract.md; error names are exception class names.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from infra.config import Timing
from infra.constructs.fragments import JSON_NULL, Retries, catch_into, poll_until
from infra.constructs.lambda_step import LambdaStep


@dataclass(frozen=True)
class WorkflowSteps:
    """The Lambda steps the backup workflow is made of."""

    resolve_policy: LambdaStep
    acquire_lease: LambdaStep
    create_snapshot: LambdaStep
    check_snapshot: LambdaStep
    tag_snapshot: LambdaStep
    replicate_snapshot: LambdaStep
    apply_retention: LambdaStep
    release_lease: LambdaStep
    session_report: LambdaStep
    prepare_worker: LambdaStep
    start_worker: LambdaStep
    check_worker: LambdaStep
    cleanup_worker: LambdaStep


class BackupWorkflow(Construct):
    """Builds the definitions of the backup state machines from their steps: `resource_definition` first,
    then `session_definition(...)` once the resource state machine exists."""

    def __init__(self, scope: Construct, id_: str, *, steps: WorkflowSteps, timing: Timing):
        super().__init__(scope, id_)
        self.steps = steps
        self.retries = Retries.from_timing(timing)
        self.resource_definition: sfn.IChainable = self._resource(steps, self.retries)

    # --- one resource (its own execution) -----------------------------------------------------------
    def _resource(self, steps: WorkflowSteps, retries: Retries) -> sfn.IChainable:
        transient, not_available, throttled = retries.transient, retries.not_available, retries.throttled
        # The end of every path: lease and slots given back, the result recorded (the execution's output).
        release = steps.release_lease.task(self, "Release lease", result_path="$", retries=[throttled])

        def guarded(task: sfn.TaskStateBase) -> sfn.TaskStateBase:
            """Any failure of a step after the lease is taken goes to Release lease, error recorded."""
            return catch_into(task, release)

        acquire = guarded(steps.acquire_lease.task(self, "Acquire lease", result_path="$.lease",
                                                   retries=[throttled]))
        create = guarded(steps.create_snapshot.task(
            self, "Create snapshot", result_path="$.snapshot", retries=[transient, not_available]))
        check = guarded(steps.check_snapshot.task(
            self, "Check snapshot", result_path="$.snapshot_wait", retries=[throttled]))
        tag = guarded(steps.tag_snapshot.task(self, "Tag snapshot", result_path="$.tags", retries=[throttled]))
        replicate = guarded(steps.replicate_snapshot.task(
            self, "Replicate snapshot", result_path="$.replica", retries=[transient, not_available]))
        retention = guarded(steps.apply_retention.task(
            self, "Apply retention", result_path="$.retention", retries=[throttled]))
        retention.next(release)

        busy_bucket = retries.of("Throttled", "TempBucketBusy")
        image_backup = self._image_backup(steps, retention, release, throttled=throttled, busy_bucket=busy_bucket,
                                          not_available=not_available)
        replication_wanted = sfn.Choice(self, "Replicate?").when(
            sfn.Condition.is_not_null("$.replication"), replicate
        ).otherwise(image_backup)
        poll_until(self, check=replicate, done=sfn.Condition.boolean_equals("$.replica.done", True),
                   wait_seconds_path="$.replica.wait_seconds", then=image_backup,
                   choice_name="Replica done?", wait_name="Wait for replica")
        tag.next(replication_wanted)
        poll_until(self, check=check, done=sfn.Condition.boolean_equals("$.snapshot_wait.ready", True),
                   wait_seconds_path="$.snapshot_wait.wait_seconds", then=tag,
                   choice_name="Snapshot ready?", wait_name="Wait for snapshot")
        # No snapshot slot free in the account-region: wait and try again (create_snapshot bounds the wait).
        poll_until(self, check=create, done=sfn.Condition.boolean_equals("$.snapshot.started", True),
                   wait_seconds_path="$.snapshot.wait_seconds", then=check,
                   choice_name="Snapshot started?", wait_name="Wait for slot")
        acquire.next(create)
        return acquire

    def _image_backup(self, steps: WorkflowSteps, retention: sfn.IChainable, release: sfn.IChainable, *,
                      throttled: dict, busy_bucket: dict, not_available: dict) -> sfn.Choice:
        """Image-level backup through a temporary worker; its cleanup runs on every path.

            Image backup? ─no─> (retention)
                │ yes
            Prepare worker ─> Start worker ─> Check worker <─┐      any failure ─┐
                                                 │ running ─┴─ Wait              │
                                                 ▼ done                          ▼
                                          Clean up worker <──────────────────────┘
                                                 ├─ failed? ──> (release lease)
                                                 └─ ok ──────> (retention)
        """
        cleanup = steps.cleanup_worker.task(self, "Clean up worker", result_path="$.image_cleanup",
                                            retries=[busy_bucket])
        catch_into(cleanup, release, result_path="$.image_cleanup_error")
        cleanup.next(sfn.Choice(self, "Image backup failed?")
                     .when(sfn.Condition.is_not_null("$.error"), release)
                     .otherwise(retention))

        def guarded(task: sfn.TaskStateBase) -> sfn.TaskStateBase:
            return catch_into(task, cleanup)

        prepare = guarded(steps.prepare_worker.task(self, "Prepare worker", result_path="$.image",
                                                    retries=[busy_bucket]))
        # DBNotAvailable: the DB is still applying the added security group
        start = guarded(steps.start_worker.task(self, "Start worker", result_path="$.image",
                                                retries=[throttled, not_available]))
        check = guarded(steps.check_worker.task(self, "Check worker", result_path="$.image", retries=[throttled]))
        poll_until(self, check=check, done=sfn.Condition.boolean_equals("$.image.done", True),
                   wait_seconds_path="$.image.wait_seconds", then=cleanup,
                   choice_name="Worker done?", wait_name="Wait for worker")
        prepare.next(start)
        start.next(check)
        return sfn.Choice(self, "Image backup?").when(
            sfn.Condition.is_not_null("$.image_backup"), prepare).otherwise(retention)

    # --- the session ----------------------------------------------------------------------------------
    def session_definition(self, *, resource_machine: sfn.IStateMachine, sessions: s3.IBucket) -> sfn.IChainable:
        """The session: resolve, one resource execution per item (Distributed Map), report."""
        steps, throttled = self.steps, self.retries.throttled
        back_up = tasks.StepFunctionsStartExecution(
            self, "Back up resource", state_machine=resource_machine,
            integration_pattern=sfn.IntegrationPattern.RUN_JOB,
            # named after the session and the item, so a retried start finds the execution it started
            name=sfn.JsonPath.string_at("$.name"),
            input=sfn.TaskInput.from_json_path_at("$.item"),
            result_selector={"status.$": "$.Status"},
        )
        # The execution records its own result, even a failure; only a lost execution lands here, and the
        # report names its resource as failed (no result recorded).
        catch_into(back_up, sfn.Pass(self, "Resource execution failed", parameters={"status": "FAILED"}))
        each_resource = sfn.DistributedMap(
            self, "Back up each resource",
            item_reader=sfn.S3JsonItemReader(bucket=sessions, key=sfn.JsonPath.string_at("$.session.items_key")),
            item_selector={
                "item.$": "$$.Map.Item.Value",
                "name.$": "States.Format('{}-{}', $.session.session_id, $$.Map.Item.Index)",
            },
            max_concurrency_path="$.session.max_concurrency",
            # the iterations' results go to S3, never into this state's output
            result_writer_v2=sfn.ResultWriterV2(bucket=sessions, prefix="map-runs"),
            result_path=sfn.JsonPath.DISCARD,
        )
        each_resource.item_processor(back_up, mode=sfn.ProcessorMode.DISTRIBUTED,
                                     execution_type=sfn.ProcessorType.STANDARD)

        resolve = steps.resolve_policy.task(self, "Resolve policy", result_path="$.session", payload={
            "policy.$": "$.policy",
            "resources.$": "$.resources",
            "execution_name.$": "$$.Execution.Name",
            "started_at.$": "$$.Execution.StartTime",
        }, retries=[throttled])
        # `resources` is optional in the execution input: normalise it to null when absent.
        with_subset = sfn.Pass(self, "Read input", parameters={
            "policy.$": "$.policy",
            "resources.$": "$.resources",
        })
        whole_policy = sfn.Pass(self, "Read input (whole policy)", parameters={
            "policy.$": "$.policy",
            "resources.$": JSON_NULL,
        })
        has_resources = sfn.Choice(self, "Subset given?").when(
            sfn.Condition.is_present("$.resources"), with_subset
        ).otherwise(whole_policy)
        has_policy = sfn.Choice(self, "Policy given?").when(
            sfn.Condition.is_present("$.policy"), has_resources
        ).otherwise(sfn.Fail(self, "Invalid input", error="InvalidInput",
                             cause='The execution input must be {"policy": "<name>"} '
                                   'optionally with "resources": ["<arn or id>", ...]'))
        with_subset.next(resolve)
        whole_policy.next(resolve)

        report = steps.session_report.task(self, "Session report", result_path="$.report", payload={
            "session.$": "$.session",
            "error.$": JSON_NULL,
        }, retries=[throttled])
        failed_report = steps.session_report.task(self, "Report failed session", result_path="$.report", payload={
            "session.$": JSON_NULL,
            "policy.$": "$.policy",
            "execution_name.$": "$$.Execution.Name",
            "started_at.$": "$$.Execution.StartTime",
            "error.$": "$.error",
        }, retries=[throttled])
        catch_into(resolve, failed_report)

        session_failed = sfn.Pass(self, "Failure cause", parameters={
            "cause.$": "States.JsonToString($.report)",
        }).next(sfn.Fail(self, "Session failed", error="BackupSessionFailed", cause_path="$.cause"))
        succeeded = sfn.Pass(self, "Session succeeded", output_path="$.report").next(
            sfn.Succeed(self, "Done"))
        outcome = sfn.Choice(self, "Session failed?").when(
            sfn.Condition.string_equals("$.report.status", "Failed"), session_failed
        ).otherwise(succeeded)
        report.next(outcome)
        failed_report.next(session_failed)
        resolve.next(each_resource)
        each_resource.next(report)
        return has_policy
