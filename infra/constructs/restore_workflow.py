"""The restore state machine, assembled in one place. Reading this file tells the whole flow.

    Restore kind? ── other ──> Fail (InvalidInput)
        │ "snapshot"                      "database" ──> (database-level restore, below)
    Plan restore ──(refused: bad input, untrusted metadata, target exists)──> Report refused restore ─> Fail
        │   (metadata decrypted and verified; settings from metadata or input; target checked)
    Copy across? ─yes─> Copy snapshot ─> Check copy <─┐   target in another account/region: shared,
        │ no                                │ ───────┴─ Wait   copied with the target's key
        ▼                                   ▼
    Replace? ─yes─> Rename original ─> Check rename <─┐      (<id>-replaced-<restore>, instances too)
        │ no                              │ not yet ─┴─ Wait
        ▼                                 ▼ renamed
    Restore snapshot <────────────────────┘
        ▼
    Check restore <─┐  not yet: Wait (growing interval, timeout)
        │ ─────────┴─
        ▼ available
    Cluster? ─no──────────────────────────────────────────────────┐
        │ yes                                                      │
    Create writer ─> Check writer <─┐                              │
                        │ ────────┴─ Wait                          │
    Create readers (side by side) ─> Check readers <─┐             │
                                        │ ─────────┴─ Wait         │
                                        ▼ all available            ▼
                                   Copied? ─yes─> Remove snapshot copy (and the share)
                                        ▼ no               ▼
                                   Restore report ──> Done (output = the report)

    any failure after planning ─> Clean up restore <─┐  delete what this restore made (readers,
                                        │ ─────────┴─ Wait   writer, cluster; no final snapshot),
                                        ▼ done               then rename the original back
                                   Report failed restore ─> Fail (RestoreFailed, cause = the report)

    Database-level restore (a restore point of the repository into a DB, through the temporary worker):

    Plan database restore ──(refused: bad input, tier the class does not offer)──> Report refused restore ─> Fail
        │  the policy's repository (or its archive) and worker, the target's access role
    From the archive? ─yes─> Request archive retrieval ─> Check archive retrieval <─┐  hours: Wait (growing
        │ no                  (packs the manifest lists;      │ not all ready ────┴─ interval) up to
        │                      S3 RestoreObject, tier)        ▼ all packs readable    retrieval_timeout_hours
        ▼ <─────────────────────────────────────────────────────┘
    Prepare worker ─> Start worker ─> Check worker <─┐      any failure ─┐ (retrieval's included)
       (2 temporary groups,            │ running ─┴─ Wait               │
        SQL Server: bucket lease)      ▼ done                           ▼
                                 Clean up worker <──────────────────────┘
                                       ├─ failed? ──> Report failed database restore ─> Fail
                                       └─ ok ──────> Database restore report ─> Done

Handlers: lambdas/rdsbackup_lambdas/handlers/{plan_restore,rename_original,restore_snapshot,
create_cluster_instances,check_restore,cleanup_restore,restore_report,plan_database_restore,
request_archive_retrieval,check_archive_retrieval}.py and the backup's worker steps; docs/restore.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.config import Timing
from infra.constructs.fragments import JSON_NULL, Retries, archive_retrieval, catch_into, poll_until
from infra.constructs.lambda_step import LambdaStep


@dataclass(frozen=True)
class RestoreSteps:
    """The Lambda steps the restore workflow is made of."""

    plan_restore: LambdaStep
    rename_original: LambdaStep
    restore_snapshot: LambdaStep
    create_cluster_instances: LambdaStep
    check_restore: LambdaStep
    cleanup_restore: LambdaStep
    restore_report: LambdaStep
    plan_database_restore: LambdaStep
    request_archive_retrieval: LambdaStep
    check_archive_retrieval: LambdaStep
    copy_snapshot: LambdaStep
    remove_snapshot_copy: LambdaStep
    # the image-level backup's worker steps, shared with the backup workflow
    prepare_worker: LambdaStep
    start_worker: LambdaStep
    check_worker: LambdaStep
    cleanup_worker: LambdaStep


class RestoreWorkflow(Construct):
    """Builds the definition of the restore state machine from its steps."""

    def __init__(self, scope: Construct, id_: str, *, steps: RestoreSteps, timing: Timing):
        super().__init__(scope, id_)
        retries = Retries.from_timing(timing)
        # a database that is modifying, backing up or renaming refuses changes for a while
        busy = [retries.throttled, retries.not_available]
        plan_and_step = {"plan.$": "$.plan", "step.$": "$.step"}

        # --- failure: clean up, then report --------------------------------------------------------
        failed_report = steps.restore_report.task(self, "Report failed restore", result_path="$.report", payload={
            "request.$": "$", "plan.$": "$.plan", "error.$": "$.error", "cleanup.$": "$.cleanup",
            "execution_name.$": "$$.Execution.Name", "started_at.$": "$$.Execution.StartTime",
        }, retries=[retries.throttled])
        restore_failed = sfn.Pass(self, "Failure cause", parameters={
            "cause.$": "States.JsonToString($.report)",
        }).next(sfn.Fail(self, "Restore failed", error="RestoreFailed", cause_path="$.cause"))
        failed_report.next(restore_failed)
        cleanup = steps.cleanup_restore.task(self, "Clean up restore", result_path="$.cleanup", payload={
            "plan.$": "$.plan", "cleanup.$": "$.cleanup",
        }, retries=busy)
        catch_into(cleanup, failed_report, result_path="$.cleanup_error")
        poll_until(self, check=cleanup, done=sfn.Condition.boolean_equals("$.cleanup.done", True),
                   wait_seconds_path="$.cleanup.wait_seconds", then=failed_report,
                   choice_name="Cleanup done?", wait_name="Wait for cleanup")
        start_cleanup = sfn.Pass(self, "Start cleanup", result_path="$.cleanup",
                                 parameters={"done": False}).next(cleanup)

        def guarded(task: sfn.TaskStateBase) -> sfn.TaskStateBase:
            """Any failure once something may exist goes to the cleanup, error recorded."""
            return catch_into(task, start_cleanup)

        def check(state_name: str) -> sfn.TaskStateBase:
            return guarded(steps.check_restore.task(self, state_name, result_path="$.step", payload=plan_and_step,
                                                    retries=[retries.throttled]))

        def waited(action: sfn.TaskStateBase, check_name: str, then: sfn.IChainable, what: str) -> sfn.TaskStateBase:
            """`action`, then its check loop until every resource it made is available, then `then`."""
            action.next(poll_until(self, check=check(check_name), done=sfn.Condition.boolean_equals(
                "$.step.ready", True), wait_seconds_path="$.step.wait_seconds", then=then,
                choice_name=f"{what} ready?", wait_name=f"Wait for {what.lower()}"))
            return action

        # --- success -----------------------------------------------------------------------------------
        report = steps.restore_report.task(self, "Restore report", result_path="$.report", payload={
            "request.$": "$", "plan.$": "$.plan", "error.$": JSON_NULL, "cleanup.$": JSON_NULL,
            "execution_name.$": "$$.Execution.Name", "started_at.$": "$$.Execution.StartTime",
        }, retries=[retries.throttled])
        report.next(sfn.Pass(self, "Restore succeeded", output_path="$.report").next(sfn.Succeed(self, "Done")))
        # the restore is done: a copy that cannot be removed is a warning in the report, not a failed restore
        remove_copy = steps.remove_snapshot_copy.task(self, "Remove snapshot copy", result_path="$.copy_removed",
                                                      payload={"plan.$": "$.plan"}, retries=[retries.throttled])
        catch_into(remove_copy, report, result_path="$.copy_removed")
        remove_copy.next(report)
        finish = sfn.Choice(self, "Copied?").when(
            sfn.Condition.is_not_null("$.plan.copy_across"), remove_copy).otherwise(report)

        # --- the restore ---------------------------------------------------------------------------------
        plan_only = {"plan.$": "$.plan"}
        readers = waited(guarded(steps.create_cluster_instances.task(
            self, "Create readers", result_path="$.step", payload={**plan_only, "which": "readers"}, retries=busy)),
            "Check readers", finish, "Readers")
        writer = waited(guarded(steps.create_cluster_instances.task(
            self, "Create writer", result_path="$.step", payload={**plan_only, "which": "writer"}, retries=busy)),
            "Check writer", readers, "Writer")
        is_cluster = sfn.Choice(self, "Cluster?").when(
            sfn.Condition.string_equals("$.plan.kind", "cluster"), writer).otherwise(finish)
        restore = waited(guarded(steps.restore_snapshot.task(
            self, "Restore snapshot", result_path="$.step", payload=plan_only, retries=busy)),
            "Check restore", is_cluster, "Restore")
        rename = waited(guarded(steps.rename_original.task(
            self, "Rename original", result_path="$.step", payload=plan_only, retries=busy)),
            "Check rename", restore, "Rename")
        replace = sfn.Choice(self, "Replace?").when(
            sfn.Condition.string_equals("$.plan.mode", "replace"), rename).otherwise(restore)
        copy = waited(guarded(steps.copy_snapshot.task(
            self, "Copy snapshot", result_path="$.step", payload=plan_only,
            retries=[retries.transient])), "Check copy", replace, "Copy")
        copy_needed = sfn.Choice(self, "Copy across?").when(
            sfn.Condition.is_not_null("$.plan.copy_across"), copy).otherwise(replace)

        plan = steps.plan_restore.task(self, "Plan restore", result_path="$.plan", payload={
            "input.$": "$", "execution_name.$": "$$.Execution.Name", "started_at.$": "$$.Execution.StartTime",
        }, retries=[retries.throttled])
        refused = steps.restore_report.task(self, "Report refused restore", result_path="$.report", payload={
            "request.$": "$", "plan.$": JSON_NULL, "error.$": "$.error", "cleanup.$": JSON_NULL,
            "execution_name.$": "$$.Execution.Name", "started_at.$": "$$.Execution.StartTime",
        }, retries=[retries.throttled]).next(restore_failed)
        catch_into(plan, refused)
        plan.next(copy_needed)

        database = self._database_restore(steps, retries, refused, restore_failed)
        kind = sfn.Choice(self, "Restore kind?").when(
            sfn.Condition.and_(sfn.Condition.is_present("$.restore"),
                               sfn.Condition.string_equals("$.restore", "snapshot")), plan,
        ).when(
            sfn.Condition.and_(sfn.Condition.is_present("$.restore"),
                               sfn.Condition.string_equals("$.restore", "database")), database,
        ).otherwise(sfn.Fail(self, "Invalid input", error="InvalidInput",
                             cause='The execution input must be {"restore": "snapshot", "snapshot_arn": ..., '
                                   '"target": {"identifier": ...}} or {"restore": "database", ...} '
                                   '(see docs/restore.md)'))
        self.definition: sfn.IChainable = kind

    def _database_restore(self, steps: RestoreSteps, retries: Retries, refused: sfn.IChainable,
                          restore_failed: sfn.IChainable) -> sfn.TaskStateBase:
        """A restore point into a DB through the temporary worker; the worker's cleanup runs on every path."""
        report_payload = {"item.$": "$", "execution_name.$": "$$.Execution.Name",
                          "started_at.$": "$$.Execution.StartTime"}
        report = steps.restore_report.task(self, "Database restore report", result_path="$.report", payload={
            **report_payload, "error.$": JSON_NULL}, retries=[retries.throttled])
        report.next(sfn.Pass(self, "Database restore succeeded", output_path="$.report").next(
            sfn.Succeed(self, "Database restored")))
        failed_report = steps.restore_report.task(self, "Report failed database restore", result_path="$.report",
                                                  payload={**report_payload, "error.$": "$.error"},
                                                  retries=[retries.throttled])
        failed_report.next(restore_failed)
        busy_bucket = retries.of("Throttled", "TempBucketBusy")
        cleanup = steps.cleanup_worker.task(self, "Clean up restore worker", result_path="$.image_cleanup",
                                            retries=[busy_bucket])
        catch_into(cleanup, failed_report, result_path="$.image_cleanup_error")
        cleanup.next(sfn.Choice(self, "Database restore failed?")
                     .when(sfn.Condition.is_not_null("$.error"), failed_report).otherwise(report))

        def guarded(task: sfn.TaskStateBase) -> sfn.TaskStateBase:
            return catch_into(task, cleanup)

        prepare = guarded(steps.prepare_worker.task(self, "Prepare restore worker", result_path="$.image",
                                                    retries=[busy_bucket]))
        start = guarded(steps.start_worker.task(self, "Start restore worker", result_path="$.image",
                                                retries=[retries.throttled, retries.not_available]))
        check = guarded(steps.check_worker.task(self, "Check restore worker", result_path="$.image",
                                                retries=[retries.throttled]))
        poll_until(self, check=check, done=sfn.Condition.boolean_equals("$.image.done", True),
                   wait_seconds_path="$.image.wait_seconds", then=cleanup,
                   choice_name="Restore worker done?", wait_name="Wait for restore worker")
        prepare.next(start)
        start.next(check)
        # an archived restore point: its Glacier packs are retrieved (hours) before the worker starts
        from_archive = archive_retrieval(self, request=steps.request_archive_retrieval,
                                         check=steps.check_archive_retrieval, retries=retries, failed=cleanup,
                                         then=prepare)
        plan = steps.plan_database_restore.task(self, "Plan database restore", result_path="$", payload={
            "input.$": "$", "execution_name.$": "$$.Execution.Name", "started_at.$": "$$.Execution.StartTime",
        }, retries=[retries.throttled])
        catch_into(plan, refused)
        plan.next(from_archive)
        return plan
