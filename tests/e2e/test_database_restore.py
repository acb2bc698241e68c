"""Database-level restore through the restore state machine: the synthesized definition in moto, the real
worker process (the same temporary worker as a backup) against the real PostgreSQL over verified TLS,
or against the fake RDS SQL Server through the temporary bucket."""

from __future__ import annotations

import json
import re

import boto3
import pytest

from tests.e2e.configs import REGION
from tests.e2e.conftest import report_of
from tests.e2e.server_harness import (
    create_postgres_instance,
    create_sqlserver_instance,
    network,
    nothing_left,
    temporary_leftovers,
    use_fake_sqlserver,
)
from tests.support.postgres_server import create_sample_database, ensure_role, schema_dump, table_checksums

pytestmark = pytest.mark.slow


def _backup(harness, name: str) -> str:
    report = report_of(harness.run({"policy": "images"}, name=name, timeout=300))
    (resource,) = report["resources"]
    assert resource["status"] == "Success", (resource, [r.log()[-2000:] for r in harness.workers.runs.values()])
    return resource["restore_point_id"]


@pytest.fixture
def shop_db(tls_postgres):
    ensure_role(tls_postgres, "app_reader")
    names = ("shop", "shop_restored")
    for name in names:
        tls_postgres.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    yield
    for name in names:
        tls_postgres.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_a_postgres_restore_point_restores_into_the_target_through_the_worker(server_harness, tls_postgres,
                                                                               shop_db):
    db = create_postgres_instance("shop-db", tls_postgres, network(), {"backup": "images"})
    create_sample_database(tls_postgres, "shop", user=db["user"], password=db["password"])
    restore_point = _backup(server_harness, "backup-for-restore")
    described = server_harness.run({"restore": "database", "policy": "images", "restore_point_id": restore_point,
                                    "target": {"arn": db["arn"]}, "databases": ["shop"],
                                    "target_database": "shop_restored"},
                                   name="database-restore", timeout=300, workflow="Restore")
    report = report_of(described)
    assert described["status"] == "SUCCEEDED", (report, server_harness.worker_logs())
    assert schema_dump(tls_postgres, "shop_restored") == schema_dump(tls_postgres, "shop")
    assert table_checksums(tls_postgres, "shop_restored") == table_checksums(tls_postgres, "shop")
    assert report["restored"]["databases"][0]["name"] == "shop"
    assert report["restored"]["databases"][0]["target"] == "shop_restored"
    assert nothing_left(), temporary_leftovers()  # worker, both groups: removed
    groups = boto3.client("rds", region_name=REGION).describe_db_instances(DBInstanceIdentifier="shop-db")[
        "DBInstances"][0]["VpcSecurityGroups"]
    assert len(groups) == 1, "the temporary group is off the DB again"
    record = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName=server_harness.app.control.outputs["SessionTableName"],
        Key={"pk": {"S": f"restore#{report['restore_id']}"}})
    assert json.loads(record["Item"]["report"]["S"])["status"] == "Success"


def test_an_existing_target_database_is_refused_and_the_worker_removed(server_harness, tls_postgres, shop_db):
    db = create_postgres_instance("shop-db", tls_postgres, network(), {"backup": "images"})
    create_sample_database(tls_postgres, "shop", user=db["user"], password=db["password"])
    restore_point = _backup(server_harness, "backup-for-refusal")
    described = server_harness.run({"restore": "database", "policy": "images", "restore_point_id": restore_point,
                                    "target": {"arn": db["arn"]}, "databases": ["shop"]},
                                   name="database-exists", timeout=300, workflow="Restore")
    report = report_of(described)
    assert described["status"] == "FAILED"
    assert "shop" in report["error"] and "exists" in report["error"], report["error"]
    assert nothing_left(), temporary_leftovers()


def test_sql_server_restore_calls_rds_restore_database_and_removes_the_bucket(server_harness, tls_postgres,
                                                                               tmp_path):
    from rdsbackup_local.moto_patches import tls_requests

    arn = create_sqlserver_instance("mssql-db", network(), {"backup": "images"})
    calls = tmp_path / "sqlserver-calls.jsonl"
    use_fake_sqlserver(server_harness, {"databases": {"appdb": 2_000_000}, "log": str(calls)})
    with tls_requests():
        restore_point = _backup(server_harness, "mssql-backup")
        described = server_harness.run({"restore": "database", "policy": "images", "restore_point_id": restore_point,
                                        "target": {"arn": arn}, "databases": ["appdb"],
                                        "target_database": "appdb_restored"},
                                       name="mssql-restore", timeout=300, workflow="Restore")
    report = report_of(described)
    assert described["status"] == "SUCCEEDED", (report, server_harness.worker_logs())
    restores = [params for sql, params in map(json.loads, calls.read_text().splitlines())
                if sql.startswith("exec msdb.dbo.rds_restore_database")]
    (params,) = restores
    assert params[0] == "appdb_restored"
    # the temporary bucket's name ends in the deployment's unpredictable suffix (docs/security.md, item 11)
    assert re.match(r"arn:aws:s3:::rdsbackup-tmp-123456789012-us-east-1-[0-9a-f]{12}/", params[1]), params[1]
    assert params[1].endswith("/appdb_restored.bak")
    assert report["restored"]["databases"] == [{"name": "appdb", "target": "appdb_restored", "replaced": False}]
    assert nothing_left(), temporary_leftovers()  # the temporary bucket went with the last lease
