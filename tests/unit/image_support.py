"""Helpers of the image-level backup tests: a VPC with a DB in it, the worker cluster, moto task control."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from moto.ecs.models import ecs_backends
from moto.moto_api import state_manager

from rdsbackup_local.moto_patches import tls_requests
from tests.unit.conftest import REGION, SOURCE_ACCOUNT, World

RESULT_BUCKET = "rdsbackup-repository"
CLUSTER = "rdsbackup-workers"
FAMILY = "rdsbackup-worker"
CONTAINER = "worker"
OPTION_ROLE = f"arn:aws:iam::{SOURCE_ACCOUNT}:role/rds-sqlserver-backup"


@dataclass
class Net:
    """The network and worker infrastructure of one account+region."""

    world: World
    vpc: str
    subnets: list[str]
    db_group: str
    other_vpc_subnet: str
    extra: dict[str, Any] = field(default_factory=dict)

    def rds(self) -> Any:
        return self.world.client("rds")

    def ec2(self) -> Any:
        return self.world.client("ec2")

    def ecs(self) -> Any:
        return self.world.client("ecs")

    def instance(self, name: str = "orders", *, engine: str = "postgres", managed_secret: bool = True,
                 option_group: str | None = None) -> dict:
        params: dict[str, Any] = {
            "DBInstanceIdentifier": name, "Engine": engine, "DBInstanceClass": "db.t3.micro",
            "MasterUsername": "admin1", "AllocatedStorage": 20, "DBSubnetGroupName": "dbsubnets",
            "VpcSecurityGroupIds": [self.db_group],
        }
        if managed_secret:
            params["ManageMasterUserPassword"] = True
        else:
            params["MasterUserPassword"] = "password123"
        if option_group:
            params["OptionGroupName"] = option_group
        return self.rds().create_db_instance(**params)["DBInstance"]

    def cluster(self, name: str = "ledger") -> dict:
        return self.rds().create_db_cluster(
            DBClusterIdentifier=name, Engine="aurora-postgresql", MasterUsername="admin1",
            ManageMasterUserPassword=True, DBSubnetGroupName="dbsubnets", VpcSecurityGroupIds=[self.db_group],
        )["DBCluster"]

    def option_group(self, name: str = "mssql-og", *, with_option: bool = True) -> str:
        rds = self.rds()
        rds.create_option_group(OptionGroupName=name, EngineName="sqlserver-se", MajorEngineVersion="15.00",
                                OptionGroupDescription="test")
        if with_option:
            rds.modify_option_group(OptionGroupName=name, ApplyImmediately=True, OptionsToInclude=[{
                "OptionName": "SQLSERVER_BACKUP_RESTORE",
                "OptionSettings": [{"Name": "IAM_ROLE_ARN", "Value": OPTION_ROLE}]}])
        return name

    def item(self, db: dict, *, session_id: str = "demo-20261125T031500-a1b2c3", **worker: Any) -> dict:
        return self.world.item(db, session_id=session_id, image_backup=image_backup(**worker))

    def groups_of(self, db_id: str, kind: str = "instance") -> list[str]:
        if kind == "instance":
            raw = self.rds().describe_db_instances(DBInstanceIdentifier=db_id)["DBInstances"][0]
        else:
            raw = self.rds().describe_db_clusters(DBClusterIdentifier=db_id)["DBClusters"][0]
        return [g["VpcSecurityGroupId"] for g in raw["VpcSecurityGroups"]]

    def group(self, group_id: str) -> dict:
        return self.ec2().describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]

    def temporary_groups(self) -> list[dict]:
        return self.ec2().describe_security_groups(
            Filters=[{"Name": "tag:rdsbackup:temporary", "Values": ["true"]}])["SecurityGroups"]

    def put_result(self, item: dict, document: dict) -> None:
        key = f"rdsbackup-results/{item['resource']['account']}/{item['session_id']}/{item['resource']['id']}.json"
        self.world.client("s3").put_object(Bucket=RESULT_BUCKET, Key=key, Body=json.dumps(document).encode())


def image_backup(**worker: Any) -> dict:
    """An ``image_backup`` ITEM section as resolve_policy copies it from POLICIES_JSON."""
    return {
        "repository_url": f"s3://{RESULT_BUCKET}/repo",
        "repository_kms_key_arn": f"arn:aws:kms:{REGION}:{SOURCE_ACCOUNT}:key/repo",
        "retention": {"keep_last": 7, "keep_days": None},
        "secret_arn": None,
        "result_prefix": f"s3://{RESULT_BUCKET}/rdsbackup-results/",
        "worker": {"launch_type": "FARGATE", "subnets": [], "cpu": 1024, "memory": 2048, "timeout_seconds": 3600,
                   "cluster": CLUSTER, "task_family": FAMILY, "container": CONTAINER, "capacity_provider": None,
                   **worker},
    }


@pytest.fixture(name="net")
def net_fixture(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[Net]:
    """A VPC (DNS hostnames on: moto's awsvpc ENIs need them) with two subnets, a DB subnet group, the DB's
    own security group, the worker cluster and task definition, and the repository bucket."""
    monkeypatch.setenv("SG_DELETE_INTERVAL_SECONDS", "0")
    monkeypatch.setenv("SG_DELETE_ATTEMPTS", "3")
    monkeypatch.setenv("LOCK_WAIT_SECONDS", "1")
    ec2 = world.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{REGION}{az}")["Subnet"][
        "SubnetId"] for i, az in ((1, "a"), (2, "b"))]
    other_vpc = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    other_subnet = ec2.create_subnet(VpcId=other_vpc, CidrBlock="10.1.1.0/24")["Subnet"]["SubnetId"]
    db_group = ec2.create_security_group(GroupName="orders-db", Description="the DB's own", VpcId=vpc)["GroupId"]
    world.client("rds").create_db_subnet_group(DBSubnetGroupName="dbsubnets", DBSubnetGroupDescription="test",
                                               SubnetIds=subnets)
    ecs = world.client("ecs")
    ecs.create_cluster(clusterName=CLUSTER)
    ecs.register_task_definition(
        family=FAMILY, networkMode="awsvpc", requiresCompatibilities=["FARGATE", "EC2"], cpu="1024", memory="2048",
        containerDefinitions=[{"name": CONTAINER, "image": "rdsbackup-worker:test", "cpu": 1024, "memory": 2048}])
    world.client("s3").create_bucket(Bucket=RESULT_BUCKET)
    with tls_requests():
        yield Net(world=world, vpc=vpc, subnets=subnets, db_group=db_group, other_vpc_subnet=other_subnet)


def moto_task(task_arn: str, cluster: str = CLUSTER) -> Any:
    """moto's own task object, to decide the worker's outcome (moto's ECS walks tasks to STOPPED by itself)."""
    return ecs_backends[SOURCE_ACCOUNT][REGION].tasks[cluster][task_arn]


def finish_task(task_arn: str, *, exit_code: int | None, reason: str = "", stop_code: str | None = None,
                stopped_reason: str = "Essential container in task exited") -> None:
    task = moto_task(task_arn)
    task.status = "STOPPED"
    task.desired_status = "STOPPED"
    task.stopped_reason = stopped_reason
    if stop_code:
        task.stop_code = stop_code
    container = task.containers[0]
    container.last_status = "STOPPED"
    container.exitCode = exit_code
    if reason:
        container.reason = reason


@contextmanager
def tasks_stay_running() -> Iterator[None]:
    """Keep moto's tasks RUNNING until a test stops them."""
    state_manager.set_transition(model_name="ecs::task", transition={"progression": "manual", "times": 10**9})
    try:
        yield
    finally:
        state_manager.unset_transition(model_name="ecs::task")
