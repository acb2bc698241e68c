"""The restore-test state machine as synthesized: the restore runs as a child, every failure reaches the
throwaway's deletion and the worker's cleanup, one test at a time, a weekly schedule per policy."""

import json

import pytest

from tests.infra.conftest import flatten, resources_of


@pytest.fixture(scope="module")
def machines(control_template) -> dict[str, dict]:
    found = {}
    for logical, machine in resources_of(control_template, "AWS::StepFunctions::StateMachine").items():
        found[logical] = json.loads(flatten(machine["Properties"]["DefinitionString"]))
    return found


@pytest.fixture(scope="module")
def definition(machines) -> dict:
    [test] = [d for d in machines.values() if "Plan restore test" in d["States"]]
    return test


@pytest.fixture(scope="module")
def per_test(definition) -> dict:
    return definition["States"]["Test each source"]["ItemProcessor"]["States"]


def test_one_test_at_a_time_and_the_restore_is_the_restore_state_machine_run_as_a_child(definition, per_test,
                                                                                      control_template):
    each = definition["States"]["Test each source"]
    assert each["MaxConcurrency"] == 1 and each["ItemsPath"] == "$.run.tests"
    restore = per_test["Restore throwaway"]
    assert restore["Resource"].endswith(":states:::states:startExecution.sync:2")
    [restore_machine] = [logical for logical in resources_of(control_template, "AWS::StepFunctions::StateMachine")
                         if logical.startswith("RestoreStateMachine")]
    assert restore["Parameters"]["StateMachineArn"] == f"<{restore_machine}>"
    assert restore["Parameters"]["Name.$"] == "$.resource.id"  # a retried start finds the same child


def test_every_failure_after_the_slot_deletes_the_throwaway_then_cleans_up_and_releases(per_test):
    for name in ("Prepare restore test", "Restore throwaway", "Locate throwaway", "Start test worker",
                 "Check test worker"):
        assert per_test[name]["Catch"] == [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error",
                                            "Next": "Delete throwaway"}], name
    assert per_test["Throwaway gone?"]["Choices"][0]["Next"] == "Clean up test worker"
    assert per_test["Delete throwaway"]["Catch"][0]["Next"] == "Clean up test worker"
    assert per_test["Clean up test worker"]["Next"] == "Release test slot"
    assert per_test["Clean up test worker"]["Catch"][0]["Next"] == "Release test slot"
    assert per_test["Release test slot"]["Next"] == "Test result"
    assert per_test["Test worker done?"]["Choices"][0]["Next"] == "Delete throwaway"


def test_a_test_slot_per_account_region_waits_for_another_running_test(per_test):
    slot = per_test["Take test slot"]
    assert "restore-test" in json.dumps(slot["Parameters"])
    assert any(retry["ErrorEquals"] == ["LeaseHeld"] for retry in slot["Retry"])
    assert per_test["Nothing to test?"]["Choices"][0]["Next"] == "Test result"


def test_weekly_schedule_per_policy_with_restore_test(control_template, definition):
    schedules = {s["Properties"]["Name"]: s["Properties"]
                 for s in resources_of(control_template, "AWS::Scheduler::Schedule").values()}
    weekly = schedules["rdsbackup-test-images"]
    assert weekly["ScheduleExpression"] == "cron(0 5 ? * SUN *)"
    assert json.loads(weekly["Target"]["Input"]) == {"policy": "images"}
    assert flatten(weekly["Target"]["Arn"]).startswith("<RestoreTestStateMachine")
