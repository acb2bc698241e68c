"""The SQL Server temporary bucket: one per account and region, shared by the operations that need it.

RDS native backup (``msdb.dbo.rds_backup_database``) writes the ``.bak`` with the IAM role of the DB
option group's ``SQLSERVER_BACKUP_RESTORE`` option; the worker then reads it into the repository. The
bucket is made on first need: KMS-encrypted (the account's ``aws/s3`` key, usable by the option's role
without a key-policy change), public access blocked, bucket-owner-enforced, TLS-only, objects expiring
after a week as a backstop. Each operation adds to the bucket policy a grant of its prefix to its option
role and holds a lease in the DynamoDB table; cleanup removes both and deletes the bucket (emptied first)
only when no unexpired lease remains.

Lease: ``pk = "bucketlease#<bucket>#<session>#<resource id>"`` with ``expires_at``. Every change to a
bucket (create, policy edit, delete) runs under a short lock item ``bucketlock#<bucket>``, so a delete
never races a new operation's create/grant and two policy edits never lose each other's statements.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from rdsbackup_lambdas import aws_errors, aws_sessions
from rdsbackup_lambdas.errors import TempBucketBusy, WorkerFailed
from rdsbackup_lambdas.image import names
from rdsbackup_lambdas.observability import logger

LEASE_PREFIX = "bucketlease#"
LOCK_PREFIX = "bucketlock#"
LOCK_SECONDS = 120
OBJECT_ACTIONS = ["s3:PutObject", "s3:GetObject", "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload"]
BUCKET_ACTIONS = ["s3:ListBucket", "s3:GetBucketLocation"]
TLS_ONLY_SID = "DenyInsecureTransport"
OBJECT_EXPIRY_DAYS = 7


def _ddb() -> Any:
    return aws_sessions.client("dynamodb", None)


# -- leases and the lock (DynamoDB, the control account) ---------------------------------------------


def lease_key(bucket: str, session_id: str, resource_id: str) -> str:
    return f"{LEASE_PREFIX}{bucket}#{session_id}#{resource_id}"


def take_lease(table: str, bucket: str, session_id: str, resource_id: str, seconds: int) -> dict[str, Any]:
    """Hold the bucket for one operation until ``expires_at`` (a retry renews it)."""
    expires_at = int(time.time()) + seconds
    _ddb().put_item(TableName=table, Item={
        "pk": {"S": lease_key(bucket, session_id, resource_id)}, "owner": {"S": session_id},
        "bucket": {"S": bucket}, "expires_at": {"N": str(expires_at)},
    })
    return {"bucket": bucket, "expires_at": expires_at}


def release_lease(table: str, bucket: str, session_id: str, resource_id: str) -> None:
    _ddb().delete_item(TableName=table, Key={"pk": {"S": lease_key(bucket, session_id, resource_id)}})


def _scan(table: str, prefix: str) -> Iterator[dict[str, Any]]:
    paginator = _ddb().get_paginator("scan")
    pages = paginator.paginate(
        TableName=table, ConsistentRead=True, FilterExpression="begins_with(pk, :p)",
        ExpressionAttributeValues={":p": {"S": prefix}},
    )
    for page in pages:
        yield from page.get("Items", [])


def live_leases(table: str, bucket: str, now: float | None = None) -> list[str]:
    """The keys of the bucket's unexpired leases."""
    now = time.time() if now is None else now
    return [i["pk"]["S"] for i in _scan(table, f"{LEASE_PREFIX}{bucket}#")
            if int(i.get("expires_at", {}).get("N", "0")) > now]


def expired_leases(table: str, now: float | None = None) -> list[dict[str, Any]]:
    """Every expired lease item (bucket leases and per-source leases) in the table."""
    now = time.time() if now is None else now
    found = []
    for prefix in (LEASE_PREFIX, "lease#"):
        found += [i for i in _scan(table, prefix) if int(i.get("expires_at", {}).get("N", "0")) < now]
    return found


def delete_expired_lease(table: str, item: dict[str, Any], now: float | None = None) -> bool:
    """Delete a lease that is still expired (a renewal since the scan keeps it)."""
    now = time.time() if now is None else now
    try:
        _ddb().delete_item(
            TableName=table, Key={"pk": item["pk"]}, ConditionExpression="expires_at < :now",
            ExpressionAttributeValues={":now": {"N": str(int(now))}},
        )
    except ClientError as exc:
        if aws_errors.error_code(exc) == "ConditionalCheckFailedException":
            return False
        raise
    return True


@contextlib.contextmanager
def locked(table: str, bucket: str, wait_seconds: float, poll: float = 0.5) -> Iterator[None]:
    """Hold ``bucketlock#<bucket>`` for the block (a crashed holder's lock lapses after 2 minutes)."""
    ddb = _ddb()
    token = uuid.uuid4().hex
    deadline = time.monotonic() + wait_seconds
    while True:
        now = int(time.time())
        try:
            ddb.put_item(
                TableName=table,
                Item={"pk": {"S": LOCK_PREFIX + bucket}, "owner": {"S": token},
                      "expires_at": {"N": str(now + LOCK_SECONDS)}},
                ConditionExpression="attribute_not_exists(pk) OR expires_at < :now",
                ExpressionAttributeValues={":now": {"N": str(now)}},
            )
            break
        except ClientError as exc:
            if aws_errors.error_code(exc) != "ConditionalCheckFailedException":
                raise
            if time.monotonic() >= deadline:
                raise TempBucketBusy(
                    f"temporary bucket {bucket} is being changed by another operation for more than "
                    f"{wait_seconds:.0f} s; retried"
                ) from exc
            time.sleep(poll)
    try:
        yield
    finally:
        with contextlib.suppress(ClientError):
            ddb.delete_item(
                TableName=table, Key={"pk": {"S": LOCK_PREFIX + bucket}}, ConditionExpression="#o = :me",
                ExpressionAttributeNames={"#o": "owner"}, ExpressionAttributeValues={":me": {"S": token}},
            )


# -- the bucket (S3, the resource's account, through the access role) --------------------------------


def _sid(session_id: str, resource_id: str, part: str) -> str:
    return f"Op{hashlib.sha256(f'{session_id}#{resource_id}'.encode()).hexdigest()[:24]}{part}"


def tls_only_statement(bucket: str) -> dict[str, Any]:
    return {
        "Sid": TLS_ONLY_SID, "Effect": "Deny", "Principal": "*", "Action": "s3:*",
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def grant_statements(bucket: str, prefix: str, role_arn: str, session_id: str, resource_id: str) -> list[dict]:
    """The option role's access to one operation's prefix (objects) and to the bucket (list, location)."""
    return [
        {"Sid": _sid(session_id, resource_id, "Objects"), "Effect": "Allow", "Principal": {"AWS": role_arn},
         "Action": OBJECT_ACTIONS, "Resource": f"arn:aws:s3:::{bucket}/{prefix}*"},
        {"Sid": _sid(session_id, resource_id, "Bucket"), "Effect": "Allow", "Principal": {"AWS": role_arn},
         "Action": BUCKET_ACTIONS, "Resource": f"arn:aws:s3:::{bucket}"},
    ]


def get_policy(s3: Any, bucket: str, account: str) -> dict[str, Any]:
    try:
        return json.loads(s3.get_bucket_policy(Bucket=bucket, ExpectedBucketOwner=account)["Policy"])
    except ClientError as exc:
        if aws_errors.error_code(exc) in ("NoSuchBucketPolicy", "NoSuchBucket"):
            return {"Version": "2012-10-17", "Statement": []}
        raise


def exists(s3: Any, bucket: str, account: str) -> bool:
    try:
        s3.head_bucket(Bucket=bucket, ExpectedBucketOwner=account)
    except ClientError as exc:
        code = aws_errors.error_code(exc)
        if code in ("404", "NoSuchBucket", "NotFound"):
            return False
        if code in ("403", "AccessDenied"):
            raise WorkerFailed(
                f"the temporary bucket name {bucket} is taken by another account (or the access role may not "
                "reach it); rds-backup cannot run SQL Server native backup in this account and region"
            ) from exc
        raise
    return True


def create(s3: Any, bucket: str, region: str, account: str) -> None:
    """Create the bucket with its encryption, public-access block, TLS-only policy, tags and expiry."""
    params: dict[str, Any] = {"Bucket": bucket, "ObjectOwnership": "BucketOwnerEnforced"}
    if region != "us-east-1":
        params["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**params)
    except ClientError as exc:
        if aws_errors.error_code(exc) != "BucketAlreadyOwnedByYou":
            raise
    s3.put_public_access_block(Bucket=bucket, ExpectedBucketOwner=account, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
    s3.put_bucket_encryption(Bucket=bucket, ExpectedBucketOwner=account, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}, "BucketKeyEnabled": True}]})
    s3.put_bucket_tagging(Bucket=bucket, ExpectedBucketOwner=account, Tagging={"TagSet": [
        {"Key": names.TEMPORARY_TAG, "Value": "true"}, {"Key": names.CREATED_AT_TAG, "Value": names.now_iso()}]})
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, ExpectedBucketOwner=account, LifecycleConfiguration={
        "Rules": [{"ID": "rdsbackup-temporary", "Status": "Enabled", "Filter": {"Prefix": ""},
                   "Expiration": {"Days": OBJECT_EXPIRY_DAYS},
                   "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}]})
    s3.put_bucket_policy(Bucket=bucket, ExpectedBucketOwner=account,
                         Policy=json.dumps({"Version": "2012-10-17", "Statement": [tls_only_statement(bucket)]}))
    logger.info("temporary bucket created", extra={"bucket": bucket})


def _put_policy(s3: Any, bucket: str, account: str, statements: list[dict[str, Any]]) -> None:
    if not any(s.get("Sid") == TLS_ONLY_SID for s in statements):
        statements = [tls_only_statement(bucket), *statements]
    s3.put_bucket_policy(Bucket=bucket, ExpectedBucketOwner=account,
                         Policy=json.dumps({"Version": "2012-10-17", "Statement": statements}))


def grant(s3: Any, bucket: str, account: str, prefix: str, role_arn: str, session_id: str, resource_id: str) -> None:
    """Add (or refresh) the operation's grant in the bucket policy. Call under :func:`locked`."""
    ours = grant_statements(bucket, prefix, role_arn, session_id, resource_id)
    sids = {s["Sid"] for s in ours}
    current = [s for s in get_policy(s3, bucket, account).get("Statement", []) if s.get("Sid") not in sids]
    _put_policy(s3, bucket, account, [*current, *ours])


def revoke(s3: Any, bucket: str, account: str, session_id: str, resource_id: str) -> bool:
    """Remove the operation's grant from the bucket policy. Call under :func:`locked`."""
    sids = {_sid(session_id, resource_id, part) for part in ("Objects", "Bucket")}
    statements = get_policy(s3, bucket, account).get("Statement", [])
    rest = [s for s in statements if s.get("Sid") not in sids]
    if len(rest) == len(statements):
        return False
    _put_policy(s3, bucket, account, rest)
    return True


def empty(s3: Any, bucket: str, account: str, prefix: str = "") -> int:
    """Delete every object (and abort every multipart upload) under ``prefix``. Returns objects deleted."""
    deleted = 0
    owner = {"ExpectedBucketOwner": account}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, **owner):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            errors = s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True},
                                       **owner).get("Errors") or []
            if errors:  # DeleteObjects reports refusals in its body, not as an exception
                first = errors[0]
                raise RuntimeError(f"cannot delete {len(errors)} object(s) of bucket {bucket}, e.g. "
                                   f"{first.get('Key')}: {first.get('Code')} {first.get('Message')}")
            deleted += len(keys)
    uploads = s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix, **owner).get("Uploads", [])
    for upload in uploads:
        s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"], **owner)
    return deleted


def delete_if_unused(s3: Any, table: str, bucket: str, account: str) -> bool:
    """Empty and delete the bucket when no unexpired lease remains. Call under :func:`locked`."""
    remaining = live_leases(table, bucket)
    if remaining:
        logger.info("temporary bucket still leased; kept", extra={"bucket": bucket, "leases": len(remaining)})
        return False
    if not exists(s3, bucket, account):
        return False
    empty(s3, bucket, account)
    s3.delete_bucket(Bucket=bucket, ExpectedBucketOwner=account)
    logger.info("temporary bucket deleted", extra={"bucket": bucket})
    return True


def tag_for_sweeper(s3: Any, bucket: str, account: str) -> None:
    """Add ``rdsbackup:sweep=true`` to the bucket's tags (keeping the others)."""
    try:
        tags = s3.get_bucket_tagging(Bucket=bucket, ExpectedBucketOwner=account)["TagSet"]
    except ClientError:
        tags = []
    tags = [t for t in tags if t["Key"] != names.SWEEP_TAG] + [{"Key": names.SWEEP_TAG, "Value": "true"}]
    s3.put_bucket_tagging(Bucket=bucket, ExpectedBucketOwner=account, Tagging={"TagSet": tags})
