"""State-machine pieces every workflow builds the same way: retries, catches, wait-and-check loops, and
the state machine itself (logged, traced, standard).

Error names are the handlers' exception class names (``rdsbackup_lambdas.errors``);
``tests/infra/test_error_names.py`` checks that every name a state machine retries or catches exists.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.config import Timing
from infra.constructs.lambda_step import LambdaStep

# CDK drops None from state parameters; this intrinsic writes an explicit JSON null.
JSON_NULL = "States.StringToJson('null')"
ANY_ERROR = "States.ALL"


def retry(errors: list[str], timing: Timing, max_attempts: int) -> dict:
    """A retry of `errors` with exponential backoff and full jitter (`sfn.RetryProps` keyword arguments)."""
    return {
        "errors": errors,
        "interval": Duration.seconds(timing.retry_interval_seconds),
        "max_attempts": max_attempts,
        "backoff_rate": timing.retry_backoff_rate,
        "max_delay": Duration.seconds(max(timing.retry_interval_seconds, 300)),
        "jitter_strategy": sfn.JitterType.FULL,
    }


@dataclass(frozen=True)
class Retries:
    """The retries the workflows share, from the config's timing."""

    throttled: dict
    # throttling and the snapshot quota: both clear up by themselves
    transient: dict
    # InvalidDBInstanceState and the like: the DB is busy (modifying, backing up) for a while
    not_available: dict
    timing: Timing

    @classmethod
    def from_timing(cls, timing: Timing) -> Retries:
        return cls(
            throttled=retry(["Throttled"], timing, timing.retry_max_attempts),
            transient=retry(["Throttled", "SnapshotQuotaExceeded"], timing, timing.retry_max_attempts),
            not_available=retry(["DBNotAvailable"], timing, timing.not_available_max_attempts),
            timing=timing,
        )

    def of(self, *errors: str) -> dict:
        """A retry of other error names, with the throttling retry's backoff and attempts."""
        return retry(list(errors), self.timing, self.timing.retry_max_attempts)


def catch_into(task: sfn.TaskStateBase, handler: sfn.IChainable, *, result_path: str = "$.error",
               errors: list[str] | None = None) -> sfn.TaskStateBase:
    """`task` with any failure (or `errors`) caught into `handler`, the error placed at `result_path`."""
    return task.add_catch(handler, errors=errors or [ANY_ERROR], result_path=result_path)


def poll_until(scope: Construct, *, check: sfn.TaskStateBase, done: sfn.Condition, wait_seconds_path: str,
               then: sfn.IChainable, choice_name: str, wait_name: str) -> sfn.TaskStateBase:
    """The wait-and-check loop: `check` runs, then `then` once `done` holds, else Wait and check again.

        check ─> choice_name ─ done ─> then
          ▲          │ not yet
          └── wait_name (seconds from wait_seconds_path)

    The check handler computes the growing interval and raises its timeout error when the wait is over
    (``rdsbackup_lambdas.polling.next_poll``), so the loop always ends. Returns `check`.
    """
    wait = sfn.Wait(scope, wait_name, time=sfn.WaitTime.seconds_path(wait_seconds_path))
    check.next(sfn.Choice(scope, choice_name).when(done, then).otherwise(wait.next(check)))
    return check


def archive_retrieval(scope: Construct, *, request: LambdaStep, check: LambdaStep, retries: Retries,
                      failed: sfn.IChainable, then: sfn.IChainable) -> sfn.Choice:
    """An archived restore point's packs retrieved from Glacier (hours) before a worker reads them, when
    ``$.retrieval`` is set (its planner made it); any failure, the bound's included, goes to `failed`.

        From the archive? ─yes─> Request archive retrieval ─> Check archive retrieval <─┐
            │ no                                                │ not all ready ─────┴─ Wait (growing)
            ▼ <─────────────────────────────────────────────────┘ every pack readable
          then

    Handlers request_archive_retrieval and check_archive_retrieval (the restore and restore-test
    workflows share them; the restore-test workflow runs the two halves apart: `request_retrieval` for
    every archived point of a run first, `await_retrieval` in each test). Returns the Choice.
    """
    poll = await_retrieval(scope, check=check, retries=retries, failed=failed, then=then)
    first = request_retrieval(scope, request=request, retries=retries, failed=failed).next(poll)
    return sfn.Choice(scope, "From the archive?").when(sfn.Condition.is_not_null("$.retrieval"), first).otherwise(then)


_RETRIEVAL = {"retrieval.$": "$.retrieval"}


def request_retrieval(scope: Construct, *, request: LambdaStep, retries: Retries,
                      failed: sfn.IChainable) -> sfn.TaskStateBase:
    """``Request archive retrieval`` (``$.retrieval``: S3 asked to retrieve the point's packs); any failure to
    `failed`."""
    return catch_into(request.task(scope, "Request archive retrieval", result_path="$.retrieval",
                                   payload=_RETRIEVAL, retries=[retries.throttled]), failed)


def await_retrieval(scope: Construct, *, check: LambdaStep, retries: Retries, failed: sfn.IChainable,
                    then: sfn.IChainable) -> sfn.TaskStateBase:
    """``Check archive retrieval`` until every pack is readable, then `then`; any failure, the bound's
    included, to `failed`. Returns the check."""
    poll = catch_into(check.task(scope, "Check archive retrieval", result_path="$.retrieval", payload=_RETRIEVAL,
                                 retries=[retries.throttled]), failed)
    return poll_until(scope, check=poll, done=sfn.Condition.boolean_equals("$.retrieval.ready", True),
                      wait_seconds_path="$.retrieval.wait_seconds", then=then,
                      choice_name="Archive retrieved?", wait_name="Wait for archive retrieval")


def logged_state_machine(scope: Construct, id_: str, *, definition: sfn.IChainable, log_group_id: str,
                         key: kms.IKey, comment: str, timeout: Duration) -> tuple[sfn.StateMachine, logs.LogGroup]:
    """A standard state machine with X-Ray tracing and every event logged (with data) to its own encrypted
    log group. Both are made in `scope` under the ids given, so existing deployments keep them."""
    log_group = logs.LogGroup(scope, log_group_id, encryption_key=key, retention=logs.RetentionDays.ONE_YEAR,
                              removal_policy=RemovalPolicy.DESTROY)
    machine = sfn.StateMachine(
        scope, id_,
        definition_body=sfn.DefinitionBody.from_chainable(definition),
        state_machine_type=sfn.StateMachineType.STANDARD,
        tracing_enabled=True,
        logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=True),
        timeout=timeout,
        comment=comment,
    )
    return machine, log_group
