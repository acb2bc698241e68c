"""boto3 sessions and clients for a role in another account (or this one) and a region.

The control plane reaches production and replica accounts through STS AssumeRole. Credentials are
cached per (role, session name) in the warm Lambda container and refreshed before they expire. The
role session name is derived from the backup session id, so CloudTrail in the production account
shows which backup session made each call. ``AWS_ENDPOINT_URL`` (the local demo against moto's
server) is honoured for every client.

Every S3 request names the account that must own its bucket (``ExpectedBucketOwner``; S3 refuses a
bucket another account owns, e.g. a name taken over after a deletion): with the function's own
credentials the backup account's (the sessions bucket, the repositories and their result documents:
``RDSBACKUP_REPOSITORY_OWNER``, which the CDK app sets on every function and the worker's repository
code, bundled for the archive retrieval, reads too); through a role, that role's account (the SQL
Server temporary bucket of a production account).
"""

from __future__ import annotations

import os
import re
import threading
import time
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.loaders import create_loader
from rdsbackup.s3_clients import REPOSITORY_OWNER_ENV, expect_owner

_BOTO_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3}, user_agent_extra="rdsbackup")
_REFRESH_MARGIN_SECONDS = 300
_cache: dict[tuple[str, str], tuple[boto3.Session, float]] = {}
_clients: dict[tuple[str, str | None, str | None, str, str | None, str | None], tuple[Any, float]] = {}
_default: list[boto3.Session] = []
_lock = threading.Lock()
# One loader for every session: parsing a service model (RDS's is large) once per container, not
# once per assumed role.
_LOADER = create_loader()


def new_session(**credentials: str) -> boto3.Session:
    """A boto3 session sharing the container's service-model loader."""
    core = botocore.session.Session()
    core.register_component("data_loader", _LOADER)
    return boto3.Session(botocore_session=core, **credentials)


def endpoint_url(service: str) -> str | None:
    """The endpoint override for a service, if any (``AWS_ENDPOINT_URL_<SERVICE>`` or ``AWS_ENDPOINT_URL``)."""
    specific = os.environ.get(f"AWS_ENDPOINT_URL_{service.upper().replace('-', '_')}")
    return specific or os.environ.get("AWS_ENDPOINT_URL") or None


def role_session_name(session_id: str | None) -> str:
    """A valid RoleSessionName (``[\\w+=,.@-]``, 2..64 chars) that names the backup session."""
    name = "rdsbackup-" + re.sub(r"[^\w+=,.@-]", "-", session_id or "session")
    return name[:64]


def default_session() -> boto3.Session:
    """The function's own credentials (the control account), one session per container."""
    with _lock:
        if not _default:
            _default.append(new_session())
        return _default[0]


def session_for(role_arn: str | None, session_id: str | None = None) -> boto3.Session:
    """A session with the credentials of ``role_arn`` (or the function's own when no role is given)."""
    if not role_arn:
        return default_session()
    name = role_session_name(session_id)
    key = (role_arn, name)
    with _lock:
        cached = _cache.get(key)
        if cached and cached[1] - time.time() > _REFRESH_MARGIN_SECONDS:
            return cached[0]
    sts = default_session().client("sts", endpoint_url=endpoint_url("sts"), config=_BOTO_CONFIG)
    creds = sts.assume_role(RoleArn=role_arn, RoleSessionName=name, DurationSeconds=3600)["Credentials"]
    session = new_session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )
    expires = creds["Expiration"].timestamp() if hasattr(creds["Expiration"], "timestamp") else time.time() + 3600
    with _lock:
        _cache[key] = (session, expires)
    return session


def bucket_owner(role_arn: str | None) -> str | None:
    """The account that must own the buckets an S3 client of ``role_arn`` (or of the function) reaches."""
    if role_arn:
        return role_arn.split(":")[4]
    return os.environ.get(REPOSITORY_OWNER_ENV) or None


def client(service: str, region: str | None, role_arn: str | None = None, session_id: str | None = None) -> Any:
    """A boto3 client for ``service`` in ``region`` with the credentials of ``role_arn``.

    Clients are reused while their credentials are valid: building one parses the service model,
    which costs more than most of the calls made with it. An S3 client names the owner of every bucket
    it reaches (``bucket_owner``).
    """
    endpoint = endpoint_url(service)
    owner = bucket_owner(role_arn) if service == "s3" else None
    key = (service, region, role_arn or None, role_session_name(session_id) if role_arn else "", endpoint, owner)
    with _lock:
        cached = _clients.get(key)
        if cached and cached[1] - time.time() > _REFRESH_MARGIN_SECONDS:
            return cached[0]
    session = session_for(role_arn, session_id)
    made = session.client(service, region_name=region, endpoint_url=endpoint, config=_BOTO_CONFIG)
    if owner is not None:
        expect_owner(made, owner)
    expires = _cache[(role_arn, role_session_name(session_id))][1] if role_arn else float("inf")
    with _lock:
        _clients[key] = (made, expires)
    return made


def clear_cache() -> None:
    """Forget cached credentials (tests)."""
    with _lock:
        _cache.clear()
        _clients.clear()
        _default.clear()
