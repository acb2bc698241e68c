"""Append-only repositories (issue 14 item 5): objects are never overwritten. The S3 backend sends
`If-None-Match: *` on every put of an immutable object (the bucket policy refuses production workers'
puts without it: tests/infra/test_repositories.py), moto's S3 enforces the condition, and the file
backend keeps the same rule. Only lock objects are rewritten in place (and result documents, outside
the repository's prefixes: a retried job rewrites its own)."""

from __future__ import annotations

import random
from urllib.parse import urlparse

import boto3
import pytest
from rdsbackup.errors import ObjectExists
from rdsbackup.repository import Repository
from rdsbackup.repository import backends as backends_module
from rdsbackup.repository.backends import FileBackend, S3Backend

from tests.support import moto_server

moto_server_url = moto_server.moto_server_url
moto_endpoint = moto_server.moto_endpoint

PASSWORD = "correct horse battery staple"
CONDITIONAL = ("PutObject", "CompleteMultipartUpload")


def test_the_file_backend_never_overwrites_an_object(tmp_path):
    backend = FileBackend(str(tmp_path))
    backend.put("manifests/abc", b"first")
    with pytest.raises(ObjectExists, match=r"manifests/abc.*never overwritten"):
        backend.put("manifests/abc", b"second")
    assert backend.get("manifests/abc") == b"first"
    backend.put("manifests/abc", b"first")  # the same bytes again: a retried write, not an overwrite
    backend.replace("locks/" + "ab" * 16, b"one")  # locks are rewritten in place by design
    backend.replace("locks/" + "ab" * 16, b"two")
    assert backend.get("locks/" + "ab" * 16) == b"two"
    assert sorted(key for key, _ in backend.list("")) == ["locks/" + "ab" * 16, "manifests/abc"]


@pytest.fixture
def s3_requests(moto_endpoint, monkeypatch):
    """Every S3 write request the clients made after this fixture: (operation, key, If-None-Match)."""
    seen: list[tuple[str, str, str | None]] = []
    session = boto3.Session()

    def record(request, **kwargs):
        operation = kwargs["event_name"].rsplit(".", 1)[-1]
        if operation in CONDITIONAL:
            key = urlparse(request.url).path.split("/", 2)[2]
            header = request.headers.get("If-None-Match")
            seen.append((operation, key, header.decode() if isinstance(header, bytes) else header))

    session.events.register("before-send.s3", record)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", session)
    return seen


def test_every_put_of_an_immutable_object_carries_if_none_match(s3_requests):
    boto3.client("s3").create_bucket(Bucket="repo-append-only")
    url = "s3://repo-append-only/orders"
    repo = Repository.init(url, password=PASSWORD)
    with repo.begin_backup(source_id="db-1", engine="postgres") as writer:
        ref = writer.add_stream("t", [random.Random(1).randbytes(3_000_000)], profile="table")
        rp_id = writer.commit({"streams": {"t": ref}})
    kinds = {key.split("/")[1] for _op, key, _header in s3_requests}
    assert {"keys", "config", "data", "index", "manifests", "locks"} <= kinds
    for _operation, key, header in s3_requests:
        if key.startswith("orders/locks/"):
            assert header is None, key  # the one object rewritten in place (its refresh)
        else:
            assert header == "*", key
    assert f"orders/manifests/{rp_id}" in [key for _op, key, _header in s3_requests]


def test_s3_refuses_a_second_put_of_a_written_key_and_keeps_the_first(moto_endpoint):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="repo-no-overwrite")
    s3.put_bucket_versioning(Bucket="repo-no-overwrite", VersioningConfiguration={"Status": "Enabled"})
    backend = S3Backend("repo-no-overwrite", "orders")
    backend.put("index/" + "ab" * 16, b"the index a backup wrote")
    with pytest.raises(ObjectExists, match="never overwritten"):
        backend.put("index/" + "ab" * 16, b"a compromised worker's replacement")
    assert backend.get("index/" + "ab" * 16) == b"the index a backup wrote"
    backend.put("index/" + "ab" * 16, b"the index a backup wrote")  # a retried request whose first landed
    versions = s3.list_object_versions(Bucket="repo-no-overwrite").get("Versions", [])
    assert len(versions) == 1


def test_a_multipart_upload_is_conditional_too_and_leaves_no_parts_when_refused(moto_endpoint, monkeypatch,
                                                                               s3_requests):
    monkeypatch.setattr(backends_module, "MULTIPART_THRESHOLD", 6 * 1024 * 1024)
    monkeypatch.setattr(backends_module, "MULTIPART_CHUNK", 5 * 1024 * 1024)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="repo-multipart-once")
    backend = S3Backend("repo-multipart-once", "p")
    first = random.Random(3).randbytes(11 * 1024 * 1024)
    backend.put("data/ab/big", first)
    with pytest.raises(ObjectExists):
        backend.put("data/ab/big", random.Random(4).randbytes(11 * 1024 * 1024))
    assert backend.get("data/ab/big") == first
    assert ("CompleteMultipartUpload", "p/data/ab/big", "*") in s3_requests
    assert "Uploads" not in s3.list_multipart_uploads(Bucket="repo-multipart-once")
