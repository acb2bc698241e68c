"""Names and tags of what an image-level backup creates, derived from the session and the resource.

A retried step computes the same names and finds what its first try made; the sweeper finds leftovers
by the tags.
"""

from __future__ import annotations

import hashlib
import re

from rdsbackup_lambdas.clock import now_iso, parse_time

TEMPORARY_TAG = "rdsbackup:temporary"
SESSION_TAG = "rdsbackup:session"
RESTORE_TEST_TAG = "rdsbackup:restore-test"  # on a restore test's throwaway: the source it tests
RESOURCE_TAG = "rdsbackup:resource"
CREATED_AT_TAG = "rdsbackup:created-at"
SWEEP_TAG = "rdsbackup:sweep"
STARTED_BY_PREFIX = "rdsbackup-"
TEMP_BUCKET_PREFIX = "rdsbackup-tmp-"
MAX_GROUP_NAME = 255
MAX_STARTED_BY = 36


def _digest(*parts: str, size: int) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:size]


def security_group_name(role: str, session_id: str, resource_arn: str, resource_id: str) -> str:
    """``rdsbackup-<role>-<session id>-<resource id>-<hash of the ARN>`` (a group name is ≤255 chars).

    The hash of the ARN keeps two resources with the same identifier apart; beyond 255 characters the
    session and resource parts are cut and a hash of the whole name keeps it unique and stable.
    """
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{session_id}-{resource_id}")
    name = f"rdsbackup-{role}-{clean}-{_digest(resource_arn, size=8)}"
    if len(name) > MAX_GROUP_NAME:
        name = f"{name[:MAX_GROUP_NAME - 17]}-{_digest(name, size=16)}"
    return name


def started_by(session_id: str, resource_arn: str) -> str:
    """The ECS ``startedBy`` of the session's worker for a resource (≤36 characters, our prefix)."""
    return STARTED_BY_PREFIX + _digest(session_id, resource_arn, size=MAX_STARTED_BY - len(STARTED_BY_PREFIX))


def temp_bucket_name(account: str, region: str, secret: str) -> str:
    """``rdsbackup-tmp-<account>-<region>-<12 hex>``: one temporary bucket per account and region.

    Bucket names are global: a name others can predict can be created by them first (the backups of that
    place would stop: ``ExpectedBucketOwner`` refuses a bucket of another account). The suffix digests the
    place with the deployment's ``secret`` (the control stack's id, ``TEMP_BUCKET_SECRET``), which only
    those who may read the control stack know; every step computes the same name.
    """
    if not secret:
        raise ValueError("the temporary bucket's name needs the deployment's secret (TEMP_BUCKET_SECRET)")
    return f"{TEMP_BUCKET_PREFIX}{account}-{region}-{_digest(secret, account, region, size=12)}"


def temp_prefix(session_id: str, resource_id: str) -> str:
    """The object prefix of one operation in the temporary bucket."""
    return f"{session_id}/{resource_id}/"


def result_url(result_prefix: str, account: str, session_id: str, resource_id: str) -> str:
    """Where the worker writes its result document: under its own account's prefix (the only one its
    role may write)."""
    base = result_prefix if result_prefix.endswith("/") else result_prefix + "/"
    return f"{base}{account}/{session_id}/{resource_id}.json"


def parse_iso(value: str | None) -> float | None:
    """Epoch seconds of an ISO-8601 time (our ``created-at`` tags), or ``None``."""
    parsed = parse_time(value)
    return parsed.timestamp() if parsed else None


def temporary_tags(session_id: str, resource_arn: str, name: str | None = None) -> dict[str, str]:
    """The tags of everything temporary an image-level backup creates."""
    tags = {TEMPORARY_TAG: "true", SESSION_TAG: session_id, RESOURCE_TAG: resource_arn, CREATED_AT_TAG: now_iso()}
    if name:
        tags["Name"] = name
    return tags
