"""The backup state machine, assembled in one place. Reading this file tells the whole flow.

    Policy given? ──no──> Fail (InvalidInput)
    Resolve policy ──(fails)──> Report failed session ──> Fail
         │
         ▼
    Map: each resource (MaxConcurrencyPath = policy concurrency, per-item Catch)
    │  Start resource ─> Acquire lease ──(LeaseHeld…)────────────────> Lease not acquired
    │     │
    │  Create snapshot ─> Check snapshot <─┐
    │                         │ not ready ─┴─ Wait (growing interval)
    │                         ▼ ready
    │                     Tag snapshot ─> Replicate? ─yes─> Replicate snapshot <─┐
    │                                        │ no                │ not done ─────┴─ Wait
    │                                        ▼                   ▼ done
    │                                   Image backup? <──────────┘
    │                                    │ yes                   │ no
    │     Prepare worker ─> Start worker ─> Check worker <─┐     │
    │          (any failure: to cleanup)        │ running ─┴─ Wait
    │                                           ▼ done           │
    │                                    Clean up worker         │
    │                                    failed? ─no─> Apply retention
    │                                      │ yes                 │
    │                   (any error in the steps above is caught into $.error ...)
    │                                      ▼                     ▼
    │                                 Release lease  <───────────┘   (... so this always runs)
    │                                      ▼
    │                                Resource result
    ▼
    Session report ──> Session failed? ──yes──> Fail (cause = the report)
                             └─no──> Succeed (output = the report)

Handlers are described in docs/state-machine-contract.md; error names are exception class names.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import aws_stepfunctions as sfn
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
    """Builds the definition of the backup state machine from its steps."""

    def __init__(self, scope: Construct, id_: str, *, steps: WorkflowSteps, timing: Timing):
        super().__init__(scope, id_)
        retries = Retries.from_timing(timing)
        transient, not_available, throttled = retries.transient, retries.not_available, retries.throttled

        # --- per resource -------------------------------------------------------------------------
        release = steps.release_lease.task(self, "Release lease", result_path=None, retries=[throttled])
        resource_result = sfn.Pass(self, "Resource result", parameters={
            "resource.$": "$.resource",
            "snapshot.$": "$.snapshot",
            "replica.$": "$.replica",
            "retention.$": "$.retention",
            "error.$": "$.error",
            "lease.$": "$.lease",
            "image.$": "$.image",
            "image_cleanup.$": "$.image_cleanup",
        })
        release.next(resource_result)

        def guarded(task: sfn.TaskStateBase) -> sfn.TaskStateBase:
            """Any failure of a step after the lease is taken goes to Release lease, error recorded."""
            return catch_into(task, release)

        acquire = steps.acquire_lease.task(self, "Acquire lease", result_path="$.lease", retries=[throttled])
        lease_not_acquired = sfn.Pass(self, "Lease not acquired", parameters={
            "resource.$": "$.resource",
            "error.$": "$.error",
        })
        catch_into(acquire, lease_not_acquired)

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
        create.next(check)
        acquire.next(create)

        # Defaults so `Resource result` can read every key whichever path an item took.
        item_defaults = sfn.Pass(self, "Start resource", parameters={
            "session_id.$": "$.session_id",
            "policy.$": "$.policy",
            "resource.$": "$.resource",
            "access_role_arn.$": "$.access_role_arn",
            "staging_kms_key_arn.$": "$.staging_kms_key_arn",
            "snapshot_retention.$": "$.snapshot_retention",
            "replication.$": "$.replication",
            "lease_seconds.$": "$.lease_seconds",
            "wait.$": "$.wait",
            "image_backup.$": "$.image_backup",
            "image.$": JSON_NULL,
            "image_cleanup.$": JSON_NULL,
            "lease.$": JSON_NULL,
            "snapshot.$": JSON_NULL,
            "replica.$": JSON_NULL,
            "retention.$": JSON_NULL,
            "error.$": JSON_NULL,
        })
        item_defaults.next(acquire)

        each_resource = sfn.Map(
            self, "Back up each resource",
            items_path="$.session.items",
            max_concurrency_path="$.session.max_concurrency",
            result_path="$.results",
        )
        each_resource.item_processor(item_defaults)

        # --- session ------------------------------------------------------------------------------
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
            "results.$": "$.results",
            "error.$": JSON_NULL,
        }, retries=[throttled])
        failed_report = steps.session_report.task(self, "Report failed session", result_path="$.report", payload={
            "session.$": JSON_NULL,
            "policy.$": "$.policy",
            "execution_name.$": "$$.Execution.Name",
            "started_at.$": "$$.Execution.StartTime",
            "results": [],
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

        self.definition: sfn.IChainable = has_policy

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
