"""The worker's S3 clients: every request names the account that must own the bucket.

A bucket name is global: if the repository's (or the SQL Server temporary) bucket were deleted and its
name taken by another account, a worker would otherwise write restore points, or read `.bak` files,
there. With ``ExpectedBucketOwner`` on every request S3 refuses (403) any bucket another account owns.
The task definitions set the owners: ``RDSBACKUP_REPOSITORY_OWNER`` (the backup account, where the
repositories and result documents are) and ``RDSBACKUP_TEMP_BUCKET_OWNER`` (the worker's own account).
Run by hand without them (a local file repository, a user's own bucket), requests name no owner.
"""

from __future__ import annotations

import os
import re

from .errors import RdsBackupError

REPOSITORY_OWNER_ENV = "RDSBACKUP_REPOSITORY_OWNER"
TEMP_BUCKET_OWNER_ENV = "RDSBACKUP_TEMP_BUCKET_OWNER"
_ACCOUNT = re.compile(r"\d{12}")


def owner_from_env(name: str) -> str | None:
    owner = os.environ.get(name) or None
    if owner is not None and not _ACCOUNT.fullmatch(owner):
        raise RdsBackupError(f"{name} must be a 12-digit AWS account id, not {owner!r}")
    return owner


def s3_client(owner: str | None, config=None):
    """An S3 client (the endpoint from ``AWS_ENDPOINT_URL`` when set, as in tests) whose every request
    that accepts ``ExpectedBucketOwner`` carries ``owner``: multipart parts and paginated lists too."""
    import boto3

    client = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None, config=config)
    if owner is not None:
        expect_owner(client, owner)
    return client


def expect_owner(client, owner: str) -> None:
    def add_owner(params: dict, model, **_kwargs) -> None:
        if "ExpectedBucketOwner" in model.input_shape.members:
            params.setdefault("ExpectedBucketOwner", owner)

    client.meta.events.register("provide-client-params.s3.*", add_owner)
