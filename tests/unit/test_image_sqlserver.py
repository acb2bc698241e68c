"""SQL Server: the option group's SQLSERVER_BACKUP_RESTORE option, the temporary bucket and its leases."""

from __future__ import annotations

import json

import pytest
from rdsbackup_lambdas.errors import SqlServerBackupOptionMissing
from rdsbackup_lambdas.handlers import cleanup_worker, prepare_worker
from rdsbackup_lambdas.image import names, temp_bucket

from tests.unit.conftest import TEMP_BUCKET_SECRET
from tests.unit.image_support import OPTION_ROLE, net_fixture  # noqa: F401 (net_fixture: the net fixture)

BUCKET = names.temp_bucket_name("123456789012", "us-east-1", TEMP_BUCKET_SECRET)


def sqlserver(net, name: str = "mssql", session_id: str = "demo-20261125T031500-a1b2c3") -> dict:
    if not net.extra.get("og"):
        net.extra["og"] = net.option_group()
    return net.item(net.instance(name, engine="sqlserver-se", option_group=net.extra["og"]), session_id=session_id)


def buckets(net) -> list[str]:
    return [b["Name"] for b in net.world.client("s3").list_buckets()["Buckets"]]


def leases(net) -> list[str]:
    return temp_bucket.live_leases(net.world.table, BUCKET)


def test_missing_option_names_the_option_group_and_the_fix(net, ctx):
    og = net.option_group("plain-og", with_option=False)
    item = net.item(net.instance("mssql", engine="sqlserver-se", option_group=og))
    with pytest.raises(SqlServerBackupOptionMissing,
                       match=r"option group 'plain-og' has no SQLSERVER_BACKUP_RESTORE.*add the "
                             r"SQLSERVER_BACKUP_RESTORE option with an IAM role .* to option group 'plain-og'"):
        prepare_worker.handler(item, ctx)
    assert net.temporary_groups() == [] and BUCKET not in buckets(net)


def test_default_option_group_is_missing_the_option(net, ctx):
    item = net.item(net.instance("mssql", engine="sqlserver-se"))
    with pytest.raises(SqlServerBackupOptionMissing, match="default:sqlserver-se"):
        prepare_worker.handler(item, ctx)


def test_bucket_is_created_encrypted_private_tls_only_with_a_grant_and_a_lease(net, ctx):
    item = sqlserver(net)
    image = prepare_worker.handler(item, ctx)
    assert image["engine"] == "sqlserver" and image["port"] == 1433
    assert image["temp_bucket"] == BUCKET and image["temp_prefix"] == f"{item['session_id']}/mssql/"
    s3 = net.world.client("s3")
    sse = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert sse["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    block = s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"]
    assert all(block.values())
    statements = {s["Sid"]: s for s in json.loads(s3.get_bucket_policy(Bucket=BUCKET)["Policy"])["Statement"]}
    deny = statements.pop("DenyInsecureTransport")
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    objects = next(s for s in statements.values() if s["Sid"].endswith("Objects"))
    bucket = next(s for s in statements.values() if s["Sid"].endswith("Bucket"))
    assert objects["Principal"] == {"AWS": OPTION_ROLE} == bucket["Principal"]
    assert objects["Resource"] == f"arn:aws:s3:::{BUCKET}/{image['temp_prefix']}*"
    assert set(objects["Action"]) == {"s3:PutObject", "s3:GetObject", "s3:ListMultipartUploadParts",
                                      "s3:AbortMultipartUpload"}
    assert set(bucket["Action"]) == {"s3:ListBucket", "s3:GetBucketLocation"}
    assert leases(net) == [f"bucketlease#{BUCKET}#{item['session_id']}#mssql"]


def test_retried_prepare_keeps_one_grant_and_one_lease(net, ctx):
    item = sqlserver(net)
    prepare_worker.handler(item, ctx)
    prepare_worker.handler(item, ctx)
    policy = json.loads(net.world.client("s3").get_bucket_policy(Bucket=BUCKET)["Policy"])
    assert len(policy["Statement"]) == 3 and len(leases(net)) == 1


def test_bucket_stays_while_another_operation_holds_a_lease(net, ctx):
    first, second = sqlserver(net, "mssql"), sqlserver(net, "mssql2")
    first["image"] = prepare_worker.handler(first, ctx)
    second["image"] = prepare_worker.handler(second, ctx)
    net.world.client("s3").put_object(Bucket=BUCKET, Key=f"{first['image']['temp_prefix']}db.bak", Body=b"bak")
    result = cleanup_worker.handler(first, ctx)
    assert result["complete"] and BUCKET in buckets(net)
    assert f"bucket {BUCKET}" not in result["removed"]
    policy = json.loads(net.world.client("s3").get_bucket_policy(Bucket=BUCKET)["Policy"])
    assert len(policy["Statement"]) == 3  # the TLS rule and the second operation's grant
    assert net.world.client("s3").list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0  # first's objects gone
    result = cleanup_worker.handler(second, ctx)
    assert f"bucket {BUCKET}" in result["removed"] and BUCKET not in buckets(net)
    assert leases(net) == []


def test_an_expired_lease_does_not_keep_the_bucket(net, ctx):
    first, second = sqlserver(net, "mssql"), sqlserver(net, "mssql2")
    first["image"] = prepare_worker.handler(first, ctx)
    second["image"] = prepare_worker.handler(second, ctx)
    ddb = net.world.client("dynamodb")
    ddb.update_item(TableName=net.world.table,
                    Key={"pk": {"S": temp_bucket.lease_key(BUCKET, second["session_id"], "mssql2")}},
                    UpdateExpression="SET expires_at = :t", ExpressionAttributeValues={":t": {"N": "1"}})
    cleanup_worker.handler(first, ctx)
    assert BUCKET not in buckets(net)


def test_a_held_lock_makes_prepare_busy(net, ctx):
    from rdsbackup_lambdas.errors import TempBucketBusy

    item = sqlserver(net)
    with temp_bucket.locked(net.world.table, BUCKET, 1), pytest.raises(TempBucketBusy):
        prepare_worker.handler(item, ctx)

