"""Every error name a state machine retries or catches is one the handlers can raise.

A name that matches nothing is silently never retried or caught (`States.All` for `States.ALL`,
`SnapshotQuota` for `SnapshotQuotaExceeded`): this test turns such a slip into a failure.
"""

import inspect
import json

from rdsbackup_lambdas import errors

from tests.infra.conftest import flatten, resources_of

# https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html
STATES_ERRORS = {"States.ALL", "States.DataLimitExceeded", "States.ExceedToleratedFailureThreshold",
                 "States.HeartbeatTimeout", "States.Http.Socket", "States.IntrinsicFailure",
                 "States.ItemReaderFailed", "States.NoChoiceMatched", "States.ParameterPathFailure",
                 "States.Permissions", "States.ResultPathMatchFailure", "States.ResultWriterFailed",
                 "States.Runtime", "States.TaskFailed", "States.Timeout", "States.BranchFailed"}
# What CDK's LambdaInvoke retries on service exceptions (retry_on_service_exceptions=True).
LAMBDA_SERVICE_ERRORS = {"Lambda.ClientExecutionTimeoutException", "Lambda.ServiceException",
                         "Lambda.AWSLambdaException", "Lambda.SdkClientException"}
HANDLER_ERRORS = {name for name, value in inspect.getmembers(errors, inspect.isclass)
                  if issubclass(value, errors.RdsBackupError)}


def _states(definition: dict):
    for name, state in definition.get("States", {}).items():
        yield name, state
        for nested in (state.get("ItemProcessor"), state.get("Iterator"), *state.get("Branches", [])):
            if nested:
                yield from _states(nested)


def _handled_error_names(definition: dict):
    for name, state in _states(definition):
        for handler in state.get("Retry", []) + state.get("Catch", []):
            for error in handler["ErrorEquals"]:
                yield name, error


def _definitions(templates: dict[str, dict]):
    for stack, template in templates.items():
        for logical, machine in resources_of(template, "AWS::StepFunctions::StateMachine").items():
            yield f"{stack}/{logical}", json.loads(flatten(machine["Properties"]["DefinitionString"]))


def test_the_app_has_state_machines_to_check(templates):
    assert dict(_definitions(templates))


def test_every_retried_or_caught_error_name_exists(templates):
    known = HANDLER_ERRORS | STATES_ERRORS | LAMBDA_SERVICE_ERRORS
    unknown = [(machine, state, error) for machine, definition in _definitions(templates)
               for state, error in _handled_error_names(definition) if error not in known]
    assert not unknown, f"error names no handler raises (machine, state, name): {unknown}"


def test_the_check_catches_a_misspelt_name():
    definition = {"States": {"Map": {"Type": "Map", "ItemProcessor": {"States": {"Step": {
        "Type": "Task", "Catch": [{"ErrorEquals": ["States.All"], "Next": "x"}]}}}}}}
    assert list(_handled_error_names(definition)) == [("Step", "States.All")]
    assert "States.All" not in HANDLER_ERRORS | STATES_ERRORS | LAMBDA_SERVICE_ERRORS
