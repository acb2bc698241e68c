"""The end-to-end harness on moto's *server*: the worker runs as a separate `rdsbackup` process and
reaches AWS through it, and backs up a real PostgreSQL server standing in for the RDS endpoint."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
import requests
from moto.moto_api._internal.models import moto_api_backend
from moto.server import ThreadedMotoServer

from infra.topology import Names
from rdsbackup_local.ecs_runner import LocalWorkers
from rdsbackup_local.lambda_runner import InProcessLambdas
from rdsbackup_local.moto_deploy import DeployedApp, deploy, session_factory
from rdsbackup_local.moto_patches import aws_behaviour
from tests.e2e.configs import CONTROL_ACCOUNT, REGION
from tests.e2e.conftest import Harness

MOTO_CONFIG = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint():
    port = _free_port()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@dataclass
class ServerHarness(Harness):
    workers: LocalWorkers
    endpoint: str

    def worker_logs(self, tail: int = 2000) -> str:
        """The end of every worker run's log, for an assertion's message."""
        return "\n".join(f"{run.job.get('source_id')}: {run.log()[-tail:]}" for run in self.workers.runs.values())


def throwaway_instances(region: str = REGION) -> list[str]:
    """The restore tests' throwaway instances that exist (the e2e config keeps the default name prefix)."""
    rds = boto3.client("rds", region_name=region)
    return [db["DBInstanceIdentifier"] for db in rds.describe_db_instances()["DBInstances"]
            if db["DBInstanceIdentifier"].startswith(Names().throwaway_prefix)]


@pytest.fixture
def server_harness(moto_endpoint, e2e_cdk_out, monkeypatch, tls_postgres):
    port = moto_endpoint.rsplit(":", 1)[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    # moto's Step Functions interpreter calls Lambda back through the server at MOTO_PORT
    monkeypatch.setenv("MOTO_PORT", port)
    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=30)
    moto_api_backend.set_config(MOTO_CONFIG)
    worker_env = {
        "AWS_ENDPOINT_URL": moto_endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION, "RDSBACKUP_CA_BUNDLE": tls_postgres.ca_file,
    }
    # RDS endpoints do not resolve here: every DB endpoint is the local PostgreSQL server.
    with aws_behaviour(), InProcessLambdas() as lambdas, \
            LocalWorkers(env=worker_env, host_for=lambda endpoint: "127.0.0.1") as workers:
        app: DeployedApp = deploy(e2e_cdk_out, session_for_account=session_factory(CONTROL_ACCOUNT),
                                  default_account=CONTROL_ACCOUNT, default_region=REGION)
        yield ServerHarness(app=app, lambdas=lambdas, workers=workers, endpoint=moto_endpoint)


def wait_until(predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def network(region: str = REGION) -> dict:
    """A VPC with two subnets, a DB subnet group and the DB's own security group, as users have them."""
    ec2 = boto3.client("ec2", region_name=region)
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{i}.0/24", AvailabilityZone=f"{region}{z}")[
        "Subnet"]["SubnetId"] for i, z in ((1, "a"), (2, "b"))]
    boto3.client("rds", region_name=region).create_db_subnet_group(
        DBSubnetGroupName="app-subnets", DBSubnetGroupDescription="app", SubnetIds=subnets)
    app_group = ec2.create_security_group(GroupName="app-db", Description="the app's DB group",
                                          VpcId=vpc)["GroupId"]
    return {"vpc": vpc, "subnets": subnets, "app_group": app_group}


def create_postgres_instance(identifier: str, server, net: dict, tags: dict[str, str]) -> dict:
    """An RDS PostgreSQL instance in moto whose endpoint is the local server, with an RDS-managed master
    secret whose password the local server's master role really has."""
    rds = boto3.client("rds", region_name=REGION)
    instance = rds.create_db_instance(
        DBInstanceIdentifier=identifier, Engine="postgres", DBInstanceClass="db.t4g.small", AllocatedStorage=20,
        MasterUsername="rds_master", ManageMasterUserPassword=True, Port=server.port,
        DBSubnetGroupName="app-subnets", VpcSecurityGroupIds=[net["app_group"]],
        Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
    )["DBInstance"]
    secret_arn = instance["MasterUserSecret"]["SecretArn"]
    secret = json.loads(boto3.client("secretsmanager", region_name=REGION).get_secret_value(
        SecretId=secret_arn)["SecretString"])
    # the master user as RDS makes it: not a superuser, CREATEDB and CREATEROLE
    user, password = secret["username"], secret["password"].replace("'", "''")
    server.execute(f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{user}') THEN "
                   f"CREATE ROLE \"{user}\" LOGIN CREATEDB CREATEROLE; END IF; END $$")
    server.execute(f"ALTER ROLE \"{user}\" PASSWORD '{password}'")
    return {"arn": instance["DBInstanceArn"], "secret_arn": secret_arn, "user": user,
            "password": secret["password"]}


def create_sqlserver_instance(identifier: str, net: dict, tags: dict[str, str]) -> str:
    """An RDS SQL Server instance whose option group has SQLSERVER_BACKUP_RESTORE (native backup and
    restore through S3), as users set it up; its ARN."""
    rds = boto3.client("rds", region_name=REGION)
    rds.create_option_group(OptionGroupName="mssql-backup", EngineName="sqlserver-se", MajorEngineVersion="15.00",
                            OptionGroupDescription="native backup and restore")
    rds.modify_option_group(OptionGroupName="mssql-backup", ApplyImmediately=True, OptionsToInclude=[{
        "OptionName": "SQLSERVER_BACKUP_RESTORE",
        "OptionSettings": [{"Name": "IAM_ROLE_ARN", "Value": "arn:aws:iam::123456789012:role/rds-native-backup"}]}])
    return rds.create_db_instance(
        DBInstanceIdentifier=identifier, Engine="sqlserver-se", DBInstanceClass="db.m6i.large", AllocatedStorage=50,
        MasterUsername="admin", ManageMasterUserPassword=True, DBSubnetGroupName="app-subnets",
        VpcSecurityGroupIds=[net["app_group"]], OptionGroupName="mssql-backup", Port=1433,
        Tags=[{"Key": k, "Value": v} for k, v in tags.items()])["DBInstance"]["DBInstanceArn"]


def use_fake_sqlserver(harness: ServerHarness, fake: dict) -> None:
    """The worker processes talk to the fake RDS SQL Server (tests/support/sqlserver_fake.py) described by
    `fake`, polling its tasks fast."""
    harness.workers.env.update({
        "RDSBACKUP_SQLSERVER_CONNECT": "tests.support.sqlserver_fake:connect_from_env",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "RDSBACKUP_FAKE_SQLSERVER": json.dumps(fake),
        "RDSBACKUP_SQLSERVER_POLL": "0.05,0.2",
    })


def temporary_leftovers(region: str = REGION) -> dict[str, list]:
    """Everything a session must not leave behind."""
    ec2 = boto3.client("ec2", region_name=region)
    groups = ec2.describe_security_groups(Filters=[{"Name": "tag:rdsbackup:temporary", "Values": ["true"]}])
    ecs = boto3.client("ecs", region_name=region)
    running = ecs.list_tasks(cluster="rdsbackup-workers", desiredStatus="RUNNING")["taskArns"]
    buckets = [b["Name"] for b in boto3.client("s3").list_buckets()["Buckets"] if b["Name"].startswith("rdsbackup-tmp")]
    return {"security_groups": [g["GroupId"] for g in groups["SecurityGroups"]], "tasks": running,
            "buckets": buckets}


def nothing_left(region: str = REGION) -> bool:
    return temporary_leftovers(region) == {"security_groups": [], "tasks": [], "buckets": []}


__all__ = ["ServerHarness", "create_postgres_instance", "create_sqlserver_instance", "network", "nothing_left", "os",
           "server_harness", "temporary_leftovers", "use_fake_sqlserver", "wait_until"]
