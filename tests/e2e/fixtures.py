"""Databases the end-to-end tests back up: created in moto as a user would have them."""

from __future__ import annotations

import boto3

from tests.e2e.configs import REGION


def rds(region: str = REGION, session: boto3.Session | None = None):
    return (session or boto3.Session()).client("rds", region_name=region)


def create_instance(identifier: str, *, tags: dict[str, str] | None = None, region: str = REGION,
                    kms_key_id: str | None = None, engine: str = "postgres") -> str:
    extra = {"StorageEncrypted": True, "KmsKeyId": kms_key_id} if kms_key_id else {}
    created = rds(region).create_db_instance(
        DBInstanceIdentifier=identifier, Engine=engine, DBInstanceClass="db.t3.micro", AllocatedStorage=20,
        MasterUsername="admin_user", MasterUserPassword="not-a-real-secret-1",
        Tags=[{"Key": k, "Value": v} for k, v in (tags or {}).items()], **extra,
    )
    return created["DBInstance"]["DBInstanceArn"]


def create_aurora_cluster(identifier: str, *, instances: int = 3, tags: dict[str, str] | None = None,
                          region: str = REGION) -> str:
    client = rds(region)
    created = client.create_db_cluster(
        DBClusterIdentifier=identifier, Engine="aurora-postgresql", MasterUsername="admin_user",
        MasterUserPassword="not-a-real-secret-1", Tags=[{"Key": k, "Value": v} for k, v in (tags or {}).items()],
    )
    for number in range(instances):
        client.create_db_instance(
            DBInstanceIdentifier=f"{identifier}-{number + 1}", DBClusterIdentifier=identifier,
            Engine="aurora-postgresql", DBInstanceClass="db.r6g.large",
            AvailabilityZone=f"{region}{'abc'[number % 3]}", PromotionTier=number,
        )
    return created["DBCluster"]["DBClusterArn"]


def db_snapshots(identifier: str, region: str = REGION, session: boto3.Session | None = None) -> list[dict]:
    client = rds(region, session)
    return client.describe_db_snapshots(DBInstanceIdentifier=identifier, SnapshotType="manual")["DBSnapshots"]


def cluster_snapshots(identifier: str, region: str = REGION) -> list[dict]:
    return rds(region).describe_db_cluster_snapshots(DBClusterIdentifier=identifier, SnapshotType="manual")[
        "DBClusterSnapshots"]
