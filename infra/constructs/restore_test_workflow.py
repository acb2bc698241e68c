"""The restore-test state machine, assembled in one place. Reading this file tells the whole flow.

    Plan restore test ──(fails)──> Report failed run ──> Fail
        │  (least recently tested sources first; the newest snapshot and restore point of each, and
        │   with archived_restore_point a second TEST of each, planned after all the others: its
        │   newest archived point)
        ▼
    Any archived point? ─no───────────────────────────────────────────┐
        │ yes                                                         │
    Map: every TEST at once (40 at a time)   (fails ─> Report failed run)
    │  Archived point? ─yes─> Request archive retrieval (an archived  │
    │      │ no               point's packs; Bulk tier: hours)        │
    │      ▼ <─────────────── (fails: $.error)                        │
    │  Retrieval requested                                            │
    ▼ (the TESTs; every retrieval under way)                          │
    Map: each TEST, one at a time (per-item Catch) <──────────────────┘
    │  Nothing to test (or no retrieval)? ─yes───────────────────────────────────> Test result
    │      │ no
    │  From the archive? ─yes─> Check archive retrieval <─┐ (the snapshot tests ran meanwhile; the
    │      │ no                   │ not all ready ────────┴─ Wait   later archived points are ready
    │      │                      │ fails, or past the bound ─> Test result       at their first check)
    │      ▼ <────────────────────┘ every pack readable
    │  Take test slot (lease per account-region: one running test there; LeaseHeld retried)
    │  Prepare restore test (the worker's 2 groups; SQL Server: bucket lease; the restore input)
    │  Restore throwaway = RestoreStateMachine, run as a child (.sync:2): smallest class, private,
    │      │                only the worker's group, tagged temporary
    │  Locate throwaway (refuses a public one or other groups)
    │  Start worker ─> Check worker <─┐       validation job: amcheck, databases, the restore point
    │                      │ running ─┴─ Wait  restored beside it, tables vs recorded rows and digests
    │        (any failure above is caught into $.error ...)
    │                      ▼
    │  Delete throwaway <─┐ deleting: Wait     (... so this always runs; what cannot be deleted
    │      ▼ gone ────────┘                     is tagged for the sweeper)
    │  Clean up worker (task, groups, bucket lease) ─> Release test slot ─> Test result
    ▼
    Restore test report ──> any failed? ──yes──> Fail (RestoreTestFailed, cause = the report)
                               └─no──> Succeed (output = the report)

Handlers: plan_restore_test, prepare_restore_test, locate_throwaway, delete_throwaway,
restore_test_report; the image-level steps start_worker, check_worker, cleanup_worker and the lease
steps are the backup workflow's own; the archive retrieval (request_archive_retrieval,
check_archive_retrieval) is the restore workflow's (fragments.archive_retrieval), run in its two halves:
every archived point of the run is asked for at the start, and each test waits for its own before it
takes its slot or makes its throwaway. The retrievals run together (N archived points cost one retrieval
wait, not N) while the snapshot tests run; hours of waiting hold no slot and bill no instance hours, and a
failed retrieval has nothing to clean up.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from infra.config import Timing
from infra.constructs.fragments import (
    JSON_NULL,
    Retries,
    await_retrieval,
    catch_into,
    poll_until,
    request_retrieval,
    retry,
)
from infra.constructs.lambda_step import LambdaStep

SLOT_PREFIX = "rdsbackup-restore-test"
# an inline Map runs at most 40 iterations at once (Step Functions): a run asks for its archived points'
# retrievals this many at a time (each request takes seconds; the retrievals then run together)
RETRIEVALS_AT_ONCE = 40


@dataclass(frozen=True)
class RestoreTestSteps:
    """The Lambda steps the restore-test workflow is made of (the backup's worker and lease steps and the
    restore's archive retrieval shared)."""

    plan_restore_test: LambdaStep
    prepare_restore_test: LambdaStep
    locate_throwaway: LambdaStep
    delete_throwaway: LambdaStep
    restore_test_report: LambdaStep
    start_worker: LambdaStep
    check_worker: LambdaStep
    cleanup_worker: LambdaStep
    acquire_lease: LambdaStep
    release_lease: LambdaStep
    request_archive_retrieval: LambdaStep
    check_archive_retrieval: LambdaStep


class RestoreTestWorkflow(Construct):
    """Builds the definition of the restore-test state machine; the restore is `restore_machine`'s."""

    def __init__(self, scope: Construct, id_: str, *, steps: RestoreTestSteps, restore_machine: sfn.IStateMachine,
                 timing: Timing):
        super().__init__(scope, id_)
        retries = Retries.from_timing(timing)
        throttled, not_available = retries.throttled, retries.not_available

        # --- per test: the end, reached on every path ----------------------------------------------
        test_result = sfn.Pass(self, "Test result", parameters={
            "source.$": "$.source", "resource.$": "$.resource", "restore_test.$": "$.restore_test",
            "timing.$": "$.timing", "worker.$": "$.image", "error.$": "$.error",
            "throwaway_cleanup.$": "$.throwaway_cleanup", "cleanup.$": "$.cleanup", "retrieval.$": "$.retrieval",
        })
        # record_result: a test slot is no backup resource; release_lease records none for it
        slot = {"session_id.$": "$.session_id", "policy.$": "$.policy", "lease_seconds.$": "$.lease_seconds",
                "record_result": False,
                "resource": {"arn.$": f"States.Format('{SLOT_PREFIX}:{{}}:{{}}', $.source.account, $.source.region)",
                             "id": SLOT_PREFIX, "kind": "instance", "account.$": "$.source.account",
                             "region.$": "$.source.region"}}
        release = steps.release_lease.task(self, "Release test slot", result_path=None, payload=slot,
                                           retries=[throttled])
        catch_into(release, test_result, result_path="$.slot_error")
        release.next(test_result)
        cleanup = steps.cleanup_worker.task(self, "Clean up test worker", result_path="$.cleanup",
                                            retries=[throttled])
        catch_into(cleanup, release, result_path="$.cleanup_error")
        cleanup.next(release)
        delete = steps.delete_throwaway.task(self, "Delete throwaway", result_path="$.throwaway_cleanup",
                                             retries=[throttled, not_available])
        catch_into(delete, cleanup, result_path="$.throwaway_error")
        poll_until(self, check=delete, done=sfn.Condition.boolean_equals("$.throwaway_cleanup.done", True),
                   wait_seconds_path="$.throwaway_cleanup.wait_seconds", then=cleanup,
                   choice_name="Throwaway gone?", wait_name="Wait for deletion")

        def guarded(task: sfn.TaskStateBase) -> sfn.TaskStateBase:
            """Any failure after the slot is taken: record it, then delete the throwaway (and so on)."""
            return catch_into(task, delete)

        # --- per test: the test itself ---------------------------------------------------------------
        take_slot = steps.acquire_lease.task(self, "Take test slot", result_path="$.slot", payload=slot, retries=[
            throttled,
            # another test in this account-region: wait for it (at most about the test timeout)
            {**retry(["LeaseHeld"], timing, max(1, timing.retry_max_attempts * 2)), "backoff_rate": 1.5},
        ])
        catch_into(take_slot, test_result)
        # (SQL Server: the temporary bucket is locked for a moment by another operation there: TempBucketBusy)
        prepare = guarded(steps.prepare_restore_test.task(
            self, "Prepare restore test", result_path="$.prepared",
            retries=[throttled, not_available, retries.of("TempBucketBusy")]))
        keep_prepared = sfn.Pass(self, "Worker network ready", parameters={
            **{f"{key}.$": f"$.{key}" for key in (
                "session_id", "policy", "resource", "source", "access_role_arn", "lease_seconds", "wait",
                "image_backup", "restore_test", "error", "throwaway_cleanup", "cleanup", "retrieval")},
            "image.$": "$.prepared.image", "restore_input.$": "$.prepared.restore_input",
            "timing": {"started_at.$": "$.prepared.started_at"},
        })
        restore = guarded(tasks.StepFunctionsStartExecution(
            self, "Restore throwaway", state_machine=restore_machine,
            integration_pattern=sfn.IntegrationPattern.RUN_JOB,
            input=sfn.TaskInput.from_json_path_at("$.restore_input"),
            # derived from the run and the source: a retried start finds the same execution
            name=sfn.JsonPath.string_at("$.resource.id"),
            result_selector={"status.$": "$.Status", "output.$": "$.Output"},
            result_path="$.restore",
        ))
        locate = guarded(steps.locate_throwaway.task(self, "Locate throwaway", result_path="$.image",
                                                     retries=[throttled]))
        restored = sfn.Pass(self, "Restored", parameters={"started_at.$": "$.timing.started_at",
                                                         "restored_at.$": "$.image.located_at"},
                            result_path="$.timing")
        start = guarded(steps.start_worker.task(self, "Start test worker", result_path="$.image",
                                                retries=[throttled, not_available]))
        check = guarded(steps.check_worker.task(self, "Check test worker", result_path="$.image",
                                                retries=[throttled]))
        poll_until(self, check=check, done=sfn.Condition.boolean_equals("$.image.done", True),
                   wait_seconds_path="$.image.wait_seconds", then=delete,
                   choice_name="Test worker done?", wait_name="Wait for test worker")
        start.next(check)
        restored.next(start)
        locate.next(restored)
        restore.next(locate)
        keep_prepared.next(restore)
        prepare.next(keep_prepared)
        take_slot.next(prepare)

        test_defaults = sfn.Pass(self, "Start test", parameters={
            **{f"{key}.$": f"$.{key}" for key in (
                "session_id", "policy", "resource", "source", "access_role_arn", "lease_seconds", "wait",
                "image_backup", "restore_test", "error", "retrieval")},
            **{f"{key}.$": JSON_NULL for key in ("image", "timing", "throwaway_cleanup", "cleanup")},
        })
        # an archived point (its retrieval asked for at the start of the run): checked until its packs are
        # readable (a copy expired since is asked for again); nothing exists yet, so a failure ends the test
        awaited = await_retrieval(self, check=steps.check_archive_retrieval, retries=retries, failed=test_result,
                                  then=take_slot)
        from_archive = sfn.Choice(self, "From the archive?").when(
            sfn.Condition.is_not_null("$.retrieval"), awaited).otherwise(take_slot)
        # nothing to test, or its archived point's retrieval could not be asked for: the test ends with that
        nothing_to_test = sfn.Choice(self, "Nothing to test?").when(
            sfn.Condition.is_not_null("$.error"), test_result).otherwise(from_archive)
        test_defaults.next(nothing_to_test)
        each_test = sfn.Map(self, "Test each source", items_path="$.run.tests", max_concurrency=1,
                            result_path="$.tests")
        each_test.item_processor(test_defaults)

        # --- every archived point's retrieval asked for at once, before the first test --------------------
        # (the snapshot tests, planned first, run while Glacier works; a failure records $.error)
        requested = sfn.Pass(self, "Retrieval requested")
        request_each = sfn.Map(self, "Request archive retrievals", items_path="$.run.tests",
                               max_concurrency=RETRIEVALS_AT_ONCE, result_path="$.run.tests")
        request_each.item_processor(sfn.Choice(self, "Archived point?").when(
            sfn.Condition.is_not_null("$.retrieval"),
            request_retrieval(self, request=steps.request_archive_retrieval, retries=retries,
                              failed=requested).next(requested)).otherwise(requested))
        request_each.next(each_test)
        any_archived = sfn.Choice(self, "Any archived point?").when(
            sfn.Condition.number_greater_than("$.run.retrievals", 0), request_each).otherwise(each_test)

        # --- the run --------------------------------------------------------------------------------------
        plan = steps.plan_restore_test.task(self, "Plan restore test", result_path="$.run", payload={
            "policy.$": "$.policy", "resources.$": "$.resources",
            "execution_name.$": "$$.Execution.Name", "started_at.$": "$$.Execution.StartTime",
        }, retries=[throttled])
        read_input = sfn.Choice(self, "Subset given?").when(
            sfn.Condition.is_present("$.resources"),
            sfn.Pass(self, "Read input", parameters={"policy.$": "$.policy", "resources.$": "$.resources"}).next(plan),
        ).otherwise(sfn.Pass(self, "Read input (every source)", parameters={
            "policy.$": "$.policy", "resources.$": JSON_NULL}).next(plan))
        has_policy = sfn.Choice(self, "Policy given?").when(sfn.Condition.is_present("$.policy"), read_input) \
            .otherwise(sfn.Fail(self, "Invalid input", error="InvalidInput",
                                cause='The execution input must be {"policy": "<name>"}, optionally with '
                                      '"resources": ["<arn or id>", ...]'))
        report = steps.restore_test_report.task(self, "Restore test report", result_path="$.report", payload={
            "session.$": "$.run.session", "tests.$": "$.tests", "error.$": JSON_NULL}, retries=[throttled])
        failed_report = steps.restore_test_report.task(self, "Report failed run", result_path="$.report", payload={
            "session.$": JSON_NULL, "policy.$": "$.policy", "execution_name.$": "$$.Execution.Name",
            "started_at.$": "$$.Execution.StartTime", "tests": [], "error.$": "$.error"}, retries=[throttled])
        catch_into(plan, failed_report)
        catch_into(request_each, failed_report)
        run_failed = sfn.Pass(self, "Failure cause", parameters={"cause.$": "States.JsonToString($.report)"}).next(
            sfn.Fail(self, "Restore test failed", error="RestoreTestFailed", cause_path="$.cause"))
        failed_report.next(run_failed)
        report.next(sfn.Choice(self, "Any test failed?").when(
            sfn.Condition.string_equals("$.report.status", "Failed"), run_failed).otherwise(
            sfn.Pass(self, "Run passed", output_path="$.report").next(sfn.Succeed(self, "Done"))))
        plan.next(any_archived)
        each_test.next(report)
        self.definition: sfn.IChainable = has_policy
