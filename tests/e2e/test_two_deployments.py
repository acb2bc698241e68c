"""Two control deployments with different name prefixes, deployed into one moto account: both deploy
(no role, key alias, bucket, cluster or schedule name is taken twice) and each one's session backs up
its own databases into its own tables."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from rdsbackup_local.lambda_runner import InProcessLambdas
from rdsbackup_local.moto_deploy import deploy, session_factory
from rdsbackup_local.moto_patches import aws_behaviour
from rdsbackup_local.synth import synthesize
from tests.e2e.configs import CONTROL_ACCOUNT, FAST_TIMING, REGION
from tests.e2e.conftest import MOTO_CONFIG, Harness, report_of
from tests.e2e.fixtures import create_instance

pytestmark = pytest.mark.slow


def config(prefix: str | None, tag: str) -> dict:
    """One policy, named the same in both deployments (its schedule's name takes the prefix)."""
    return {"control": {"account": CONTROL_ACCOUNT, "region": REGION}, "timing": FAST_TIMING,
            **({"deployment": {"name_prefix": prefix}} if prefix else {}),
            "repositories": {"main": {}},
            "policies": [{"name": "nightly", "schedule": {"expression": "cron(0 3 * * ? *)"},
                          "selection": {"tags": {"backup": tag}}, "snapshot_retention": 2,
                          "retention_min_days": 0}]}


def test_two_deployments_coexist_in_one_account_and_each_runs_its_own_session(tmp_path):
    with mock_aws(config=MOTO_CONFIG), aws_behaviour(), InProcessLambdas() as lambdas:
        harnesses = {}
        for prefix, tag in ((None, "green"), ("blue", "blue")):
            out, _ = synthesize(config(prefix, tag), tmp_path / f"{tag}.out", account=CONTROL_ACCOUNT, region=REGION)
            app = deploy(out, session_for_account=session_factory(CONTROL_ACCOUNT), default_account=CONTROL_ACCOUNT,
                         default_region=REGION)
            harnesses[tag] = Harness(app=app, lambdas=lambdas)
        green, blue = harnesses["green"].app, harnesses["blue"].app
        assert green.control.name == "RdsBackupControl" and blue.control.name == "blue-RdsBackupControl"
        assert sorted(green.schedule_names + blue.schedule_names) == ["blue-nightly", "rdsbackup-nightly"]
        databases = {tag: create_instance(f"{tag}-db", tags={"backup": tag}) for tag in harnesses}

        for tag, harness in harnesses.items():
            described = harness.run({"policy": "nightly"}, name=f"{tag}-session")
            report = report_of(described)
            assert described["status"] == "SUCCEEDED", report
            assert [r["arn"] for r in report["resources"]] == [databases[tag]]
            assert report["resources"][0]["snapshot_arn"]

        dynamodb = boto3.client("dynamodb", region_name=REGION)
        for tag, other in (("green", "blue"), ("blue", "green")):
            own, theirs = (harnesses[name].app.control.outputs["SessionTableName"] for name in (tag, other))
            assert own != theirs
            records = [json.dumps(item) for item in dynamodb.scan(TableName=own)["Items"]]
            assert any(f"{tag}-db" in record for record in records), f"{tag}'s session is recorded in its table"
            assert not any(f"{other}-db" in record for record in records), f"{other}'s session is not in {tag}'s"


def test_one_deployments_retention_never_deletes_the_other_deployments_snapshots_of_the_same_database(tmp_path):
    """Both deployments back up the same database under a policy of the same name. Each one's retention
    keeps its own newest two: the other's snapshots carry the managed marker too, but their metadata is
    sealed with the other deployment's tag key, so they are not in this deployment's chain."""
    with mock_aws(config=MOTO_CONFIG), aws_behaviour(), InProcessLambdas() as lambdas:
        harnesses = {}
        for prefix, name in ((None, "green"), ("blue", "blue")):
            out, _ = synthesize(config(prefix, "shared"), tmp_path / f"{name}.out", account=CONTROL_ACCOUNT,
                                region=REGION)
            app = deploy(out, session_for_account=session_factory(CONTROL_ACCOUNT), default_account=CONTROL_ACCOUNT,
                         default_region=REGION)
            harnesses[name] = Harness(app=app, lambdas=lambdas)
        create_instance("shared-db", tags={"backup": "shared"})
        made: dict[str, list[str]] = {"green": [], "blue": []}
        for round_ in range(3):
            for name, harness in harnesses.items():
                described = harness.run({"policy": "nightly"}, name=f"{name}-session-{round_}")
                report = report_of(described)
                assert described["status"] == "SUCCEEDED", report
                made[name].append(report["resources"][0]["snapshot_arn"])

        rds = boto3.client("rds", region_name=REGION)
        left = {s["DBSnapshotArn"] for s in rds.describe_db_snapshots(DBInstanceIdentifier="shared-db",
                                                                       SnapshotType="manual")["DBSnapshots"]}
        for name, arns in made.items():
            assert arns[0] not in left, f"{name}'s retention deletes its own oldest snapshot"
            assert set(arns[1:]) <= left, f"{name}'s newest two are kept by both deployments' retention"
        assert len(left) == 4
