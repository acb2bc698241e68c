"""Item 11 of docs/security.md: every S3 request of the worker names the account that must own the bucket
(``ExpectedBucketOwner``, sent as ``x-amz-expected-bucket-owner``), so a bucket name taken over by another
account is refused by S3 instead of receiving restore points or handing out `.bak` files."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws
from rdsbackup import job, s3_clients
from rdsbackup.errors import RdsBackupError
from rdsbackup.progress import Reporter
from rdsbackup.repository import Repository
from rdsbackup.repository.backends import MULTIPART_THRESHOLD, backend_for
from rdsbackup.sqlserver import backup as sqlserver_backup

from infra import topology

REPOSITORY_OWNER, TEMP_OWNER = "123456789012", "333333333333"
REPOSITORY_BUCKET, TEMP_BUCKET = "rdsbackup-main-123456789012-us-east-1", "rdsbackup-tmp-333333333333-us-east-1"


@pytest.fixture
def requests(monkeypatch):
    """Every S3 request the code under test sends: (operation, bucket, the owner header)."""
    monkeypatch.setenv(s3_clients.REPOSITORY_OWNER_ENV, REPOSITORY_OWNER)
    monkeypatch.setenv(s3_clients.TEMP_BUCKET_OWNER_ENV, TEMP_OWNER)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    seen: list[tuple[str, str, str | None]] = []
    with mock_aws():
        admin = boto3.client("s3", region_name="us-east-1")
        for bucket in (REPOSITORY_BUCKET, TEMP_BUCKET):
            admin.create_bucket(Bucket=bucket)
        admin.put_object(Bucket=TEMP_BUCKET, Key="s1/orders-db/app.bak", Body=b"bak" * 1000)
        boto3.setup_default_session()

        def record(model, params, **_kwargs):
            bucket = next((b for b in (REPOSITORY_BUCKET, TEMP_BUCKET) if b in params["url"]), params["url"])
            seen.append((model.name, bucket, params["headers"].get("x-amz-expected-bucket-owner")))

        boto3.DEFAULT_SESSION.events.register("before-call.s3", record)
        yield seen
    boto3.DEFAULT_SESSION = None


def test_every_repository_and_result_request_names_the_backup_account(requests):
    url = f"s3://{REPOSITORY_BUCKET}/orders"
    repo = Repository.init(url, password="pw")
    with repo.begin_backup(source_id="orders-db", engine="postgres") as writer:
        ref = writer.add_stream("s", [b"row " * 50_000], profile="bulk")
        point = writer.commit({"source_id": "orders-db", "engine": "postgres", "streams": {"s": ref}})
    reopened = Repository.open(url, password="pw")
    assert b"".join(reopened.open_stream(reopened.load_manifest(point)["streams"]["s"])) == b"row " * 50_000
    backend = backend_for(url)
    backend.put("data/big", b"x" * (MULTIPART_THRESHOLD + 1))  # the multipart path: create, parts, complete
    assert backend.get_range("data/big", 0, 4) == b"xxxx" and backend.exists("data/big")
    backend.delete_many([key for key, _ in backend.list("locks/")] or ["locks/none"])
    job.write_result(f"s3://{REPOSITORY_BUCKET}/rdsbackup-results/333333333333/s1.json", {"status": "ok"})

    operations = {operation for operation, _, _ in requests}
    assert {"PutObject", "GetObject", "HeadObject", "ListObjectsV2", "DeleteObjects", "CreateMultipartUpload",
            "UploadPart", "CompleteMultipartUpload"} <= operations, operations
    assert {(operation, owner) for operation, _, owner in requests if owner != REPOSITORY_OWNER} == set()
    assert {bucket for _, bucket, _ in requests} == {REPOSITORY_BUCKET}


def test_every_temporary_bucket_request_names_the_workers_account(requests):
    s3 = sqlserver_backup._s3_client()
    blocks = sqlserver_backup.s3_object_blocks(s3, TEMP_BUCKET, "s1/orders-db/app.bak",
                                               reporter=Reporter())
    assert b"".join(blocks) == b"bak" * 1000
    assert sqlserver_backup._delete_quietly(s3, TEMP_BUCKET, "s1/orders-db/app.bak") is None
    assert {operation for operation, _, _ in requests} >= {"HeadObject", "GetObject", "DeleteObject"}
    assert {owner for _, _, owner in requests} == {TEMP_OWNER}


def test_without_the_environment_nothing_is_named_and_a_bad_owner_is_refused(monkeypatch):
    monkeypatch.delenv(s3_clients.REPOSITORY_OWNER_ENV, raising=False)
    assert s3_clients.owner_from_env(s3_clients.REPOSITORY_OWNER_ENV) is None
    monkeypatch.setenv(s3_clients.REPOSITORY_OWNER_ENV, "rdsbackup")
    with pytest.raises(RdsBackupError, match="12-digit AWS account id"):
        s3_clients.owner_from_env(s3_clients.REPOSITORY_OWNER_ENV)


def test_infra_sets_the_names_the_worker_reads():
    assert (topology.REPOSITORY_OWNER_ENV, topology.TEMP_BUCKET_OWNER_ENV) == (
        s3_clients.REPOSITORY_OWNER_ENV, s3_clients.TEMP_BUCKET_OWNER_ENV)
