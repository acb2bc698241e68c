"""Repository keys: passphrase (scrypt) and KMS-wrapped master keys, and format versions."""

from __future__ import annotations

import json

import boto3
import pytest
from rdsbackup.errors import UnsupportedFormatVersion, WrongRepositoryKey
from rdsbackup.repository import FORMAT_VERSION, Repository
from rdsbackup.repository.config import with_checksum

from tests.support import moto_server

moto_server_url = moto_server.moto_server_url
moto_endpoint = moto_server.moto_endpoint


def one_backup(repo: Repository, data: bytes) -> dict:
    with repo.begin_backup(source_id="s", engine="postgres") as writer:
        ref = writer.add_stream("t", [data], profile="table")
        writer.commit({"streams": {"t": ref}})
    return ref


def test_wrong_passphrase_is_refused_with_a_clear_error(tmp_path):
    url = f"file://{tmp_path}/repo"
    Repository.init(url, password="right")
    with pytest.raises(WrongRepositoryKey, match="wrong repository passphrase"):
        Repository.open(url, password="wrong")


def test_passphrase_comes_from_the_environment_when_not_passed(tmp_path, monkeypatch):
    url = f"file://{tmp_path}/repo"
    monkeypatch.setenv("RDSBACKUP_PASSWORD", "from-env")
    repo = Repository.init(url)
    ref = one_backup(repo, b"row\n" * 1000)
    assert b"".join(Repository.open(url).open_stream(ref)) == b"row\n" * 1000
    monkeypatch.setenv("RDSBACKUP_PASSWORD", "not-it")
    with pytest.raises(WrongRepositoryKey):
        Repository.open(url)
    monkeypatch.delenv("RDSBACKUP_PASSWORD")
    with pytest.raises(WrongRepositoryKey, match="RDSBACKUP_PASSWORD"):
        Repository.open(url)


def test_objects_are_encrypted_at_rest(tmp_path):
    url = f"file://{tmp_path}/repo"
    repo = Repository.init(url, password="pw")
    secret = b"customer-4242@example.com\t" * 2000
    one_backup(repo, secret)
    for path in (tmp_path / "repo").rglob("*"):
        if path.is_file():
            assert b"customer-4242" not in path.read_bytes(), path


def test_kms_wrapped_repository_round_trip(moto_endpoint, monkeypatch):
    monkeypatch.delenv("RDSBACKUP_PASSWORD", raising=False)
    key_id = boto3.client("kms").create_key(Description="repository key")["KeyMetadata"]["KeyId"]
    boto3.client("s3").create_bucket(Bucket="repo-kms")
    url = "s3://repo-kms/r"
    repo = Repository.init(url, kms_key_id=key_id)
    data = b"kms protected row\n" * 50_000
    ref = one_backup(repo, data)

    reopened = Repository.open(url)  # no passphrase: the key document names the KMS key
    assert b"".join(reopened.open_stream(ref)) == data
    key_objects = boto3.client("s3").list_objects_v2(Bucket="repo-kms", Prefix="r/keys/")["Contents"]
    doc = json.loads(boto3.client("s3").get_object(Bucket="repo-kms", Key=key_objects[0]["Key"])["Body"].read())
    assert doc["type"] == "kms" and doc["kms_key_id"] == key_id and "encrypted_master_key" in doc


def test_kms_key_that_cannot_decrypt_is_a_wrong_key(moto_endpoint):
    kms = boto3.client("kms")
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    other_key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="repo-kms-other")
    url = "s3://repo-kms-other/r"
    Repository.init(url, kms_key_id=key_id)
    [key_object] = s3.list_objects_v2(Bucket="repo-kms-other", Prefix="r/keys/")["Contents"]
    doc = json.loads(s3.get_object(Bucket="repo-kms-other", Key=key_object["Key"])["Body"].read())
    doc["kms_key_id"] = other_key_id  # as if the repository were opened with the wrong key
    s3.put_object(Bucket="repo-kms-other", Key=key_object["Key"], Body=with_checksum(doc))
    with pytest.raises(WrongRepositoryKey, match=other_key_id):
        Repository.open(url)


def test_newer_format_version_fails_clearly(tmp_path):
    url = f"file://{tmp_path}/repo"
    Repository.init(url, password="pw")
    config_path = tmp_path / "repo" / "config"
    config = json.loads(config_path.read_text())
    assert config["version"] == FORMAT_VERSION
    config["version"] = FORMAT_VERSION + 1
    config_path.write_bytes(with_checksum(config))  # as a newer rdsbackup would write it
    with pytest.raises(UnsupportedFormatVersion, match=f"format version {FORMAT_VERSION + 1}.*upgrade"):
        Repository.open(url, password="pw")


def test_something_else_at_the_url_is_not_a_repository(tmp_path):
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "config").write_text('{"hello": 1}')
    with pytest.raises(UnsupportedFormatVersion, match="not an rdsbackup repository"):
        Repository.open(f"file://{tmp_path}/repo", password="pw")
