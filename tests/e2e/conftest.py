"""End-to-end harness: the synthesized stacks deployed into moto, the state machine executed by moto's
interpreter, every Lambda task running the real handler in-process."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from rdsbackup_local.lambda_runner import InProcessLambdas
from rdsbackup_local.moto_deploy import DeployedApp, deploy, session_factory
from rdsbackup_local.moto_patches import aws_behaviour, faithful_restores
from rdsbackup_local.synth import synthesize
from tests.e2e.configs import CONTROL_ACCOUNT, E2E_CONFIG, REGION

MOTO_CONFIG = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}


@pytest.fixture(scope="session")
def e2e_cdk_out(tmp_path_factory) -> Path:
    out, _ = synthesize(E2E_CONFIG, tmp_path_factory.mktemp("cdk") / "cdk.out", account=CONTROL_ACCOUNT,
                        region=REGION)
    return out


@dataclass
class Harness:
    app: DeployedApp
    lambdas: InProcessLambdas

    @property
    def sfn(self):
        return boto3.client("stepfunctions", region_name=REGION)

    def run(self, execution_input: dict, name: str, timeout: float = 120, workflow: str = "Backup") -> dict:
        """Start a named execution of `workflow`'s state machine and wait for it to finish; returns
        describe_execution."""
        return self.wait(self.start(execution_input, name, workflow=workflow), timeout)

    def start(self, execution_input: dict, name: str, workflow: str = "Backup") -> str:
        return self.sfn.start_execution(stateMachineArn=self.app.workflow_arn(workflow), name=name,
                                        input=json.dumps(execution_input))["executionArn"]

    def wait(self, execution_arn: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            described = self.sfn.describe_execution(executionArn=execution_arn)
            if described["status"] != "RUNNING":
                return described
            if time.monotonic() > deadline:
                raise TimeoutError(f"execution {execution_arn} still running after {timeout}s")
            time.sleep(0.05)

    @property
    def tag_key_arn(self) -> str:
        functions = boto3.client("lambda", region_name=REGION).list_functions()["Functions"]
        tagger = next(f for f in functions if "TagSnapshot" in f["FunctionName"])
        return tagger["Environment"]["Variables"]["TAG_KMS_KEY_ARN"]

    def decode_tags(self, arn: str, region: str = REGION, session: boto3.Session | None = None) -> dict:
        """The encrypted metadata on a snapshot, decoded as the retention step does."""
        from rdsbackup_lambdas.tag_metadata import TagCodec

        rds = (session or boto3.Session()).client("rds", region_name=region)
        tags = rds.list_tags_for_resource(ResourceName=arn)["TagList"]
        return TagCodec(boto3.client("kms", region_name=REGION), self.tag_key_arn).decode(tags, arn)

    def resource_executions(self, described: dict) -> list[str]:
        """The ARNs of the resource executions a session started (named <session id>-<item index>)."""
        session_id = summary_of(described)["session_id"]
        pages = self.sfn.get_paginator("list_executions").paginate(
            stateMachineArn=self.app.workflow_arn("ResourceBackup"))
        return sorted(e["executionArn"] for page in pages for e in page["executions"]
                      if e["name"].startswith(f"{session_id}-"))

    def history(self, execution_arn: str) -> list[dict]:
        events, token = [], None
        while True:
            page = self.sfn.get_execution_history(executionArn=execution_arn, maxResults=1000,
                                                  **({"nextToken": token} if token else {}))
            events += page["events"]
            token = page.get("nextToken")
            if not token:
                return events


def summary_of(described: dict) -> dict:
    """The session's summary: the output of a succeeded execution, the cause of a failed one."""
    if described["status"] == "SUCCEEDED":
        return json.loads(described["output"])
    return json.loads(described["cause"])


def report_of(described: dict) -> dict:
    """The session's full report (every resource), from where the summary says it is."""
    summary = summary_of(described)
    location = summary.get("report")
    if not location:  # the session failed before it had resources
        return {**summary, "resources": []}
    body = boto3.client("s3", region_name=REGION).get_object(Bucket=location["bucket"], Key=location["key"])["Body"]
    return json.loads(body.read())


@pytest.fixture(scope="session")
def tls_postgres():
    """The PostgreSQL server standing in for RDS endpoints: TLS only, with a test CA."""
    from tests.support.postgres_server import shared_tls_server

    return shared_tls_server()


@pytest.fixture
def harness(e2e_cdk_out, monkeypatch) -> Harness:
    with mock_aws(config=MOTO_CONFIG), aws_behaviour(), faithful_restores(), InProcessLambdas() as lambdas:
        app = deploy(e2e_cdk_out, session_for_account=session_factory(CONTROL_ACCOUNT),
                     default_account=CONTROL_ACCOUNT, default_region=REGION)
        yield Harness(app=app, lambdas=lambdas)


# The moto-server variant of the harness (image-level backups with a real worker process).
from tests.e2e.server_harness import moto_endpoint, server_harness  # noqa: E402, F401
