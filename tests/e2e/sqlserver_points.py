"""SQL Server restore points for the restore-test end-to-end files (tests/e2e/test_restore_test*.py): a source
backed up through the fake RDS SQL Server (no SQL Server runs here), what the test worker's native restores
did, and the temporary bucket's leases left behind."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import boto3

from tests.e2e.configs import REGION
from tests.e2e.conftest import report_of
from tests.e2e.server_harness import create_sqlserver_instance, network, use_fake_sqlserver
from tests.support.sqlserver_fake import fake_bak

DATABASES = {"appdb": 1_000_000}


def sqlserver_backed_up(harness, tmp_path: Path, policy: str = "images", **test_fake) -> tuple[str, Path]:
    """mssql-db, selected by `policy`'s tag, backed up by it (the real worker against the fake RDS SQL Server);
    then the fake the test worker meets is `test_fake` over the same database. Returns the restore point and
    the file of every statement the fake answered (and every native restore's "-- restored" digest)."""
    create_sqlserver_instance("mssql-db", network(), {"backup": policy})
    calls = tmp_path / "sqlserver-calls.jsonl"
    use_fake_sqlserver(harness, {"databases": DATABASES, "log": str(calls)})
    backup = report_of(harness.run({"policy": policy}, name=f"mssql-{policy}-backup", timeout=300))
    assert backup["status"] == "Success", backup
    # one fake per worker process ("shared"): a database one connection restores is there for the next
    use_fake_sqlserver(harness, {"databases": DATABASES, "log": str(calls), "shared": True, **test_fake})
    [restore_point] = [r["restore_point_id"] for r in backup["resources"] if r["arn"].endswith(":db:mssql-db")]
    return restore_point, calls


def calls_of(calls: Path) -> list[tuple[str, list]]:
    return [tuple(line) for line in map(json.loads, calls.read_text().splitlines())]


def restored_baks(calls: Path) -> list[str]:
    """The `.bak` S3 ARNs the worker handed to rds_restore_database."""
    return [params[1] for sql, params in calls_of(calls) if sql.startswith("exec msdb.dbo.rds_restore_database")]


def restored_digests(calls: Path) -> dict[str, str]:
    """Per database a native restore made, the SHA-256 of the `.bak` it read from S3."""
    return {params[0]: params[1] for sql, params in calls_of(calls) if sql == "-- restored"}


def backed_up_digest(name: str = "appdb") -> str:
    """The SHA-256 of the `.bak` the fake's native backup of `name` wrote (what a restore must read back)."""
    return hashlib.sha256(fake_bak(name, DATABASES[name])).hexdigest()


def bucket_leases() -> list[str]:
    """The temporary bucket's leases left in the control table(s)."""
    ddb = boto3.client("dynamodb", region_name=REGION)
    return [item["pk"]["S"] for table in ddb.list_tables()["TableNames"]
            for item in ddb.scan(TableName=table)["Items"]
            if item.get("pk", {}).get("S", "").startswith("bucketlease#")]
