"""The restore-test state machine as synthesized: the restore runs as a child, every failure reaches the
throwaway's deletion and the worker's cleanup, one test at a time, a weekly schedule per policy."""

import json

import pytest

from tests.infra.conftest import as_list, definition_of, flatten, resources_of, role_statements, state_machine


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


def test_every_archived_points_retrieval_is_asked_for_at_the_start_and_each_test_waits_for_its_own(
        definition, per_test, control_template):
    states = definition["States"]
    assert states["Plan restore test"]["Next"] == "Any archived point?"
    any_archived = states["Any archived point?"]
    assert any_archived["Choices"] == [{"Variable": "$.run.retrievals", "NumericGreaterThan": 0,
                                        "Next": "Request archive retrievals"}]
    assert any_archived["Default"] == "Test each source"
    # a Map over the run's TESTs, 40 at a time (an inline Map's most), writing them back for the tests
    requests = states["Request archive retrievals"]
    assert requests["ItemsPath"] == "$.run.tests" and requests["ResultPath"] == "$.run.tests"
    assert requests["MaxConcurrency"] == 40 and requests["Next"] == "Test each source"
    assert requests["Catch"][0]["Next"] == "Report failed run"
    asked = requests["ItemProcessor"]["States"]
    assert requests["ItemProcessor"]["StartAt"] == "Archived point?"
    assert asked["Archived point?"]["Choices"] == [{"Variable": "$.retrieval", "IsNull": False,
                                                    "Next": "Request archive retrieval"}]
    assert asked["Archived point?"]["Default"] == "Retrieval requested"
    assert asked["Request archive retrieval"]["Next"] == "Retrieval requested"
    # nothing exists yet: a failure is that TEST's error, which ends it before its slot and throwaway
    assert asked["Request archive retrieval"]["Catch"] == [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error",
                                                            "Next": "Retrieval requested"}]
    assert asked["Retrieval requested"]["Type"] == "Pass" and asked["Retrieval requested"]["End"] is True
    assert per_test["Nothing to test?"]["Choices"][0] == {"Variable": "$.error", "IsNull": False,
                                                          "Next": "Test result"}
    # each test then checks its own (already under way) until readable, before its slot and throwaway
    assert per_test["Nothing to test?"]["Default"] == "From the archive?"
    choice = per_test["From the archive?"]
    assert choice["Choices"][0]["Next"] == "Check archive retrieval" and choice["Default"] == "Take test slot"
    assert "Request archive retrieval" not in per_test
    assert per_test["Check archive retrieval"]["Next"] == "Archive retrieved?"
    ready = per_test["Archive retrieved?"]
    assert ready["Choices"][0]["Next"] == "Take test slot" and ready["Default"] == "Wait for archive retrieval"
    assert per_test["Wait for archive retrieval"]["SecondsPath"] == "$.retrieval.wait_seconds"
    assert per_test["Wait for archive retrieval"]["Next"] == "Check archive retrieval"
    # any failure (the bound's ArchiveRetrievalTimedOut included) ends the test
    assert per_test["Check archive retrieval"]["Catch"] == [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error",
                                                             "Next": "Test result"}]
    # the very functions the restore workflow's loop invokes (one function, role and log group each)
    restore = definition_of(state_machine(control_template, "RestoreStateMachine"))["States"]
    for name, state in (("Request archive retrieval", asked["Request archive retrieval"]),
                        ("Check archive retrieval", per_test["Check archive retrieval"])):
        assert state["Resource"] == restore[name]["Resource"]
        assert "RetrievalFunction" in state["Resource"], state["Resource"]
        assert state["Parameters"] == {"retrieval.$": "$.retrieval"}
    # the retrieval's state reaches the report on every path
    assert per_test["Test result"]["Parameters"]["retrieval.$"] == "$.retrieval"


def test_the_restore_test_timeout_leaves_room_for_a_retrieval_per_archived_test(control_template):
    machine = state_machine(control_template, "RestoreTestStateMachine")
    # 24 h + archtested's archive.retrieval_timeout_hours (0.005 h = 18 s) for each of up to max_resources
    # (1,000) sources: each test bounds its own wait, so in the worst case they add up
    assert definition_of(machine)["TimeoutSeconds"] == 24 * 3600 + 18 * 1000


def test_a_sample_bounds_the_retrievals_a_run_waits_for_and_a_year_bounds_all():
    from infra.config import parse_config
    from infra.durations import MAX_EXECUTION_SECONDS, restore_test_timeout_seconds
    from tests.e2e.configs import CONTROL_ACCOUNT, E2E_CONFIG, REGION

    def timeout(**restore_test) -> int:
        config = json.loads(json.dumps(E2E_CONFIG))
        for policy in config["policies"]:
            if policy["name"] == "archtested":
                policy["restore_test"].update(restore_test)
                policy["archive"]["retrieval_timeout_hours"] = 48
        return restore_test_timeout_seconds(parse_config(config, default_account=CONTROL_ACCOUNT,
                                                         default_region=REGION))

    assert timeout(sample=2) == (24 + 2 * 48) * 3600
    assert timeout() == MAX_EXECUTION_SECONDS  # 1,000 sources x 48 h: capped at a Standard execution's year
    assert timeout(targets=["restore_point"]) == 24 * 3600


def test_the_plan_reads_only_the_manifests_of_the_archives_it_tests(control_template):
    statements = role_statements(control_template)["rdsbackup-step-plan-restore-test-us-east-1"]
    s3 = [s for s in statements if any(a.startswith("s3:") for a in as_list(s["Action"]))]
    actions = {a for s in s3 for a in as_list(s["Action"])}
    assert actions == {"s3:GetObject", "s3:ListBucket"}, actions
    reads = sorted(flatten(r).split(".Arn>/", 1)[1] for s in s3 if "s3:GetObject" in as_list(s["Action"])
                   for r in as_list(s["Resource"]))
    # archtested tests its archive; images archives too but does not test it: not readable here
    assert reads == ["archtested/config", "archtested/keys/*", "archtested/manifests/*"], reads
    (listing,) = [s for s in s3 if as_list(s["Action"]) == ["s3:ListBucket"]]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["archtested/keys/*", "archtested/manifests/*"]}}
    kms = [s for s in statements if "kms:Decrypt" in as_list(s["Action"])
           and "Repositories" in flatten(s["Resource"])]
    assert kms and all(s.get("Condition") for s in kms)
