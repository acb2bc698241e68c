"""The offline deploy: every stack into moto, every workflow's state machine executable under its output."""

from __future__ import annotations

import boto3
import pytest

from tests.e2e.configs import REGION


def test_each_workflow_output_names_an_executing_state_machine(harness):
    app = harness.app
    machines = [name for name, resource in app.control.template["Resources"].items()
                if resource["Type"] == "AWS::StepFunctions::StateMachine"]
    assert machines and set(app.state_machine_arns) >= set(machines)
    workflows = [key.removesuffix("StateMachineArn") for key in app.control.outputs
                 if key.endswith("StateMachineArn") and key != "StateMachineArn"]
    assert "Backup" in workflows
    sfn = boto3.client("stepfunctions", region_name=REGION)
    executable = {machine["stateMachineArn"] for machine in sfn.list_state_machines()["stateMachines"]}
    for workflow in workflows:
        assert app.workflow_arn(workflow) in executable, workflow
        assert app.workflow_arn(workflow) in app.state_machine_arns.values(), workflow
    assert app.state_machine_arn == app.workflow_arn("Backup") == app.control.outputs["StateMachineArn"]


def test_an_unknown_workflow_is_named_in_the_error(harness):
    with pytest.raises(KeyError, match=r"no 'Nightly' workflow deployed; the control stack has .*'Backup'"):
        harness.app.workflow_arn("Nightly")
