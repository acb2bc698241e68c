"""Fixtures of the Lambda unit tests: a moto world with two accounts, keys, a table, a topic."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from rdsbackup_lambdas import aws_sessions

from rdsbackup_local.moto_patches import aws_behaviour
from tests.support.lambda_context import lambda_context

SOURCE_ACCOUNT = DEFAULT_ACCOUNT_ID
TARGET_ACCOUNT = "222222222222"
REGION = "us-east-1"
TARGET_REGION = "eu-west-1"
SOURCE_ROLE = f"arn:aws:iam::{SOURCE_ACCOUNT}:role/rdsbackup-access"
TARGET_ROLE = f"arn:aws:iam::{TARGET_ACCOUNT}:role/rdsbackup-replica"
# the control stack's id in a deployment: what makes the temporary bucket's name unpredictable
TEMP_BUCKET_SECRET = "6f1d2c40-ad51-11ef-8b3e-0e2f5a9c7d11"


def session_in(account: str) -> boto3.Session:
    """A boto3 session in ``account`` (moto maps assumed-role credentials to the role's account)."""
    if account == SOURCE_ACCOUNT:
        return aws_sessions.new_session()
    creds = boto3.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/test-admin", RoleSessionName="tests"
    )["Credentials"]
    return aws_sessions.new_session(
        aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )


@dataclass
class World:
    """The moto world a test runs in, with helpers to build databases and ITEMs."""

    tag_key_arn: str
    staging_key_arn: str
    table: str
    topic_arn: str
    queue_url: str
    bucket: str = "rdsbackup-sessions-test"
    results_table: str = "rdsbackup-results"
    keys: dict[tuple[str, str], str] = field(default_factory=dict)
    clients: dict[tuple[str, str, str], Any] = field(default_factory=dict)

    # -- AWS access ---------------------------------------------------------------------------------
    def client(self, service: str, region: str = REGION, account: str = SOURCE_ACCOUNT) -> Any:
        key = (service, region, account)
        if key not in self.clients:
            self.clients[key] = session_in(account).client(service, region_name=region)
        return self.clients[key]

    def cmk(self, account: str = SOURCE_ACCOUNT, region: str = REGION) -> str:
        """A customer-managed key in ``account``/``region`` (one per place, made on first use)."""
        if (account, region) not in self.keys:
            self.keys[(account, region)] = self.client("kms", region, account).create_key()["KeyMetadata"]["Arn"]
        return self.keys[(account, region)]

    # -- databases ----------------------------------------------------------------------------------
    def instance(self, name: str = "orders", *, region: str = REGION, encrypted: bool = True,
                 kms_key: str | None = None, tags: dict[str, str] | None = None, engine: str = "postgres") -> dict:
        params: dict[str, Any] = {
            "DBInstanceIdentifier": name, "Engine": engine, "DBInstanceClass": "db.t3.micro",
            "MasterUsername": "admin1", "MasterUserPassword": "password123", "AllocatedStorage": 20,
            "StorageEncrypted": encrypted,
            "Tags": [{"Key": k, "Value": v} for k, v in (tags or {}).items()],
        }
        if kms_key:
            params["KmsKeyId"] = kms_key
        return self.client("rds", region).create_db_instance(**params)["DBInstance"]

    def cluster(self, name: str = "ledger", *, instances: int = 3, region: str = REGION, encrypted: bool = True,
                kms_key: str | None = None, tags: dict[str, str] | None = None) -> dict:
        rds = self.client("rds", region)
        params: dict[str, Any] = {
            "DBClusterIdentifier": name, "Engine": "aurora-postgresql", "MasterUsername": "admin1",
            "MasterUserPassword": "password123", "StorageEncrypted": encrypted, "Port": 5432,
            "Tags": [{"Key": k, "Value": v} for k, v in (tags or {}).items()],
        }
        if kms_key:
            params["KmsKeyId"] = kms_key
        cluster = rds.create_db_cluster(**params)["DBCluster"]
        for i in range(instances):
            rds.create_db_instance(
                DBInstanceIdentifier=f"{name}-{i + 1}", DBClusterIdentifier=name, Engine="aurora-postgresql",
                DBInstanceClass="db.r6g.large", PromotionTier=i, AvailabilityZone=f"{region}{'abc'[i % 3]}",
                PubliclyAccessible=False,
            )
        return cluster

    def item(self, db: dict, *, session_id: str = "demo-20261125T031500-a1b2c3", policy: str = "demo",
             retention: int = 7, replication: dict | None = None, **extra: Any) -> dict:
        """An ITEM for ``db`` (a create_db_instance/cluster response), as resolve_policy makes it."""
        if "DBClusterArn" in db:
            arn, ident, kind = db["DBClusterArn"], db["DBClusterIdentifier"], "cluster"
        else:
            arn, ident, kind = db["DBInstanceArn"], db["DBInstanceIdentifier"], "instance"
        region, account = arn.split(":")[3], arn.split(":")[4]
        item = {
            "session_id": session_id, "policy": policy,
            "resource": {"arn": arn, "id": ident, "kind": kind, "account": account, "region": region,
                         "engine": db.get("Engine", "postgres")},
            "access_role_arn": SOURCE_ROLE, "staging_kms_key_arn": self.staging_key_arn,
            "snapshot_retention": retention, "replication": replication, "lease_seconds": 600,
            "wait": {"initial_seconds": 5, "max_seconds": 20, "factor": 2, "timeout_seconds": 60},
            "lease": None, "snapshot": None, "replica": None, "retention": None, "error": None,
        }
        item.update(extra)
        if replication is not None:
            # the policy configures this target (the handlers check the item against it)
            policies = json.loads(os.environ.get("POLICIES_JSON") or "{}")
            policies.setdefault(policy, {})["replication"] = {"retention": 7, **replication}
            os.environ["POLICIES_JSON"] = json.dumps(policies)
        return item

    def sns_messages(self) -> list[dict]:
        sqs = self.client("sqs")
        messages = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
        return [json.loads(m["Body"]) for m in messages]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Powertools warns when a handler flushes no metric; most calls emit none, which is normal.
    for item in items:
        item.add_marker(pytest.mark.filterwarnings("ignore:No application metrics to publish"))


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """A fresh moto world: tag key, staging key, sessions/leases table, failure topic (with a queue)."""
    aws_sessions.clear_cache()
    with mock_aws(), aws_behaviour():
        kms = boto3.client("kms", region_name=REGION)
        ddb = boto3.client("dynamodb", region_name=REGION)
        ddb.create_table(
            TableName="rdsbackup", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST",
        )
        ddb.create_table(
            TableName="rdsbackup-results",
            KeySchema=[{"AttributeName": "session_id", "KeyType": "HASH"},
                       {"AttributeName": "resource_arn", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": "session_id", "AttributeType": "S"},
                                  {"AttributeName": "resource_arn", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        boto3.client("s3", region_name=REGION).create_bucket(Bucket="rdsbackup-sessions-test")
        sns = boto3.client("sns", region_name=REGION)
        topic = sns.create_topic(Name="rdsbackup-failures")["TopicArn"]
        sqs = boto3.client("sqs", region_name=REGION)
        queue_url = sqs.create_queue(QueueName="failures")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
        world = World(
            tag_key_arn=kms.create_key(Description="tags")["KeyMetadata"]["Arn"],
            staging_key_arn=kms.create_key(Description="staging")["KeyMetadata"]["Arn"],
            table="rdsbackup", topic_arn=topic, queue_url=queue_url,
        )
        monkeypatch.setenv("TABLE_NAME", world.table)
        monkeypatch.setenv("TOPIC_ARN", world.topic_arn)
        monkeypatch.setenv("TAG_KMS_KEY_ARN", world.tag_key_arn)
        monkeypatch.setenv("SESSIONS_BUCKET", world.bucket)
        monkeypatch.setenv("TEMP_BUCKET_SECRET", TEMP_BUCKET_SECRET)
        monkeypatch.setenv("RESULTS_TABLE", world.results_table)
        monkeypatch.setenv("THROWAWAY_PREFIX", "rdsbackup-test-")  # the default deployment's (Names.throwaway_prefix)
        monkeypatch.setenv("POLICIES_JSON", "{}")  # world.item() adds the policies its items replicate by
        yield world
    aws_sessions.clear_cache()


@pytest.fixture
def ctx():
    return lambda_context()
