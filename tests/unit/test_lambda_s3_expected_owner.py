"""Item 11 of docs/security.md, the Lambdas' side: every S3 request names the account that must own its
bucket (``ExpectedBucketOwner``, sent as ``x-amz-expected-bucket-owner``). With the function's own
credentials that is the backup account (``RDSBACKUP_REPOSITORY_OWNER``, set on every function): the
result document check_worker reads, the session's items and report. Through a production role it is
that role's account (the SQL Server temporary bucket)."""

from __future__ import annotations

import contextlib

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from rdsbackup_lambdas import aws_sessions, session_store
from rdsbackup_lambdas.image import worker_tasks

CONTROL, PRODUCTION = "123456789012", "333333333333"
REPOSITORY, SESSIONS = "rdsbackup-main-123456789012-us-east-1", "rdsbackup-sessions-123456789012-us-east-1"
RESULT = "rdsbackup-results/333333333333/s1/orders-db.json"


@pytest.fixture
def sent(monkeypatch):
    """(operation, the owner header) of every request the S3 clients of aws_sessions send."""
    monkeypatch.setenv("RDSBACKUP_REPOSITORY_OWNER", CONTROL)
    aws_sessions.clear_cache()
    seen: list[tuple[str, str | None]] = []
    with mock_aws():
        admin = boto3.client("s3", region_name="us-east-1")
        for bucket in (REPOSITORY, SESSIONS):
            admin.create_bucket(Bucket=bucket)
        admin.put_object(Bucket=REPOSITORY, Key=RESULT, Body=b'{"status": "ok"}')
        original = aws_sessions.client

        def recording(service, *args, **kwargs):
            made = original(service, *args, **kwargs)
            if service == "s3" and not getattr(made, "_recorded", False):
                made.meta.events.register("before-call.s3", lambda model, params, **_: seen.append(
                    (model.name, params["headers"].get("x-amz-expected-bucket-owner"))))
                made._recorded = True
            return made

        monkeypatch.setattr(aws_sessions, "client", recording)
        yield seen
    aws_sessions.clear_cache()


def test_check_worker_reads_the_result_document_only_from_a_backup_account_bucket(sent):
    assert worker_tasks.read_result(f"s3://{REPOSITORY}/{RESULT}") == {"status": "ok"}
    assert worker_tasks.read_result(f"s3://{REPOSITORY}/rdsbackup-results/{PRODUCTION}/s1/none.json") is None
    assert sent == [("GetObject", CONTROL), ("GetObject", CONTROL)]


def test_the_session_items_and_report_name_the_backup_account(sent):
    key = session_store.put_items(SESSIONS, "s1", [{"arn": "a"}])
    assert session_store.read_items(SESSIONS, key) == [{"arn": "a"}]
    session_store.put_report(SESSIONS, "s1", {"status": "ok"})
    assert sent == [("PutObject", CONTROL), ("GetObject", CONTROL), ("PutObject", CONTROL)]


def test_a_client_through_a_production_role_names_that_roles_account(sent):
    s3 = aws_sessions.client("s3", "us-east-1", f"arn:aws:iam::{PRODUCTION}:role/rdsbackup-launch-us-east-1", "s1")
    with contextlib.suppress(ClientError):  # the header is what counts here, not moto's answer across accounts
        s3.list_objects_v2(Bucket=REPOSITORY)  # any call that takes the parameter, without naming the owner
    s3.list_buckets()  # ListBuckets takes none: nothing is added
    assert sent == [("ListObjectsV2", PRODUCTION), ("ListBuckets", None)]


def test_an_explicit_owner_is_kept(sent):
    s3 = aws_sessions.client("s3", None)
    s3.head_bucket(Bucket=REPOSITORY, ExpectedBucketOwner=CONTROL)
    assert sent == [("HeadBucket", CONTROL)]
