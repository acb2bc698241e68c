"""Environment of each handler, parsed once at cold start into a frozen dataclass.

``from_env()`` fails loudly (``ConfigurationError`` naming the variable) so a wiring mistake in the
CDK app shows up on the first invocation with a clear message instead of a ``KeyError`` deep inside.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rdsbackup_lambdas.errors import ConfigurationError
from rdsbackup_lambdas.slots import SlotLimits


def _required(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigurationError(f"environment variable {name} is not set (the CDK app must set it)")
    return value


@dataclass(frozen=True)
class PoliciesConfig:
    """``resolve_policy``: the validated policies, as produced at synth (``POLICIES_JSON``)."""

    policies: dict[str, Any]

    @classmethod
    def from_env(cls) -> PoliciesConfig:
        # The deployed app ships the policies in the code package (POLICIES_FILE, checked against
        # POLICIES_SHA256: infra/policies_bundle.py) and never sets POLICIES_JSON, which serves tests (and
        # wins, so a test's own policies are read even where an in-process run left POLICIES_FILE set).
        inline = os.environ.get("POLICIES_JSON", "").strip()
        name = os.environ.get("POLICIES_FILE", "").strip()
        raw = inline or (_policies_from_file(name) if name else _required("POLICIES_JSON"))
        try:
            policies = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"POLICIES_JSON is not valid JSON: {exc}") from exc
        if not isinstance(policies, dict):
            raise ConfigurationError("POLICIES_JSON must be a JSON object {policy name: policy}")
        return cls(policies=policies)


_POLICIES_TOKEN = re.compile(r"\{\{policies-token:(\d+)\}\}")


def _policies_from_file(name: str) -> str:
    """The policies file of the code package, verified against the deployed hash, deploy-time values put back."""
    # LAMBDA_TASK_ROOT is where Lambda unpacked the code package
    root = Path(os.environ.get("LAMBDA_TASK_ROOT") or Path(__file__).resolve().parent.parent)
    try:
        raw = (root / name).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"the policies file {name!r} is not in the code package ({root}): {exc}") from exc
    expected = _required("POLICIES_SHA256")
    if hashlib.sha256(raw).hexdigest() != expected:
        raise ConfigurationError(
            f"the policies file {name!r} does not match the SHA-256 deployed with the function ({expected}): the "
            "code package was changed outside a deploy; redeploy with `cdk deploy`"
        )
    return _POLICIES_TOKEN.sub(lambda match: _required(f"POLICIES_TOKEN_{match.group(1)}"), raw.decode())


@dataclass(frozen=True)
class LeaseConfig:
    """``acquire_lease`` / ``release_lease``: the DynamoDB table of sessions and leases."""

    table_name: str

    @classmethod
    def from_env(cls) -> LeaseConfig:
        return cls(table_name=_required("TABLE_NAME"))


@dataclass(frozen=True)
class SlotConfig:
    """Handlers that take or give back slots (``slots.py``): the table, and the limits (``SLOT_LIMITS``,
    AWS's defaults when unset)."""

    table_name: str
    limits: SlotLimits

    @classmethod
    def from_env(cls) -> SlotConfig:
        return cls(table_name=_required("TABLE_NAME"), limits=SlotLimits.from_json(os.environ.get("SLOT_LIMITS", "")))


@dataclass(frozen=True)
class TagConfig:
    """Handlers that write or read encrypted tags: the KMS key (in the control account) wrapping data keys."""

    tag_kms_key_arn: str

    @classmethod
    def from_env(cls) -> TagConfig:
        arn = _required("TAG_KMS_KEY_ARN")
        if not arn.startswith("arn:") or ":kms:" not in arn:
            raise ConfigurationError(f"TAG_KMS_KEY_ARN must be a KMS key ARN, got {arn!r}")
        return cls(tag_kms_key_arn=arn)


@dataclass(frozen=True)
class ReportConfig:
    """``session_report``: where the session record goes and whom to tell about failures."""

    table_name: str
    topic_arn: str

    @classmethod
    def from_env(cls) -> ReportConfig:
        return cls(table_name=_required("TABLE_NAME"), topic_arn=_required("TOPIC_ARN"))


@dataclass(frozen=True)
class SessionStoreConfig:
    """Where a session's items, results and report live (``session_store.py``)."""

    bucket: str
    results_table: str

    @classmethod
    def from_env(cls) -> SessionStoreConfig:
        return cls(bucket=_required("SESSIONS_BUCKET"), results_table=_required("RESULTS_TABLE"))


def _optional_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigurationError(f"environment variable {name} must be a number, got {raw!r}") from exc
    if value < 0:
        raise ConfigurationError(f"environment variable {name} must not be negative, got {raw!r}")
    return value


@dataclass(frozen=True)
class ImageConfig:
    """``prepare_worker`` / ``cleanup_worker``: the table holding temporary-bucket leases and locks, and the
    bounds of the short waits (``DependencyViolation`` retries, the bucket lock)."""

    table_name: str
    delete_attempts: int = 10
    delete_interval_seconds: float = 5.0
    lock_wait_seconds: float = 60.0
    # what makes the temporary bucket's name unpredictable to others (image/names.py)
    temp_bucket_secret: str = ""

    @classmethod
    def from_env(cls) -> ImageConfig:
        return cls(
            table_name=_required("TABLE_NAME"), temp_bucket_secret=_required("TEMP_BUCKET_SECRET"),
            delete_attempts=max(1, int(_optional_number("SG_DELETE_ATTEMPTS", 10))),
            delete_interval_seconds=_optional_number("SG_DELETE_INTERVAL_SECONDS", 5.0),
            lock_wait_seconds=_optional_number("LOCK_WAIT_SECONDS", 60.0),
        )


# A restore test's throwaway is ``<THROWAWAY_PREFIX><16 hex>``, an RDS identifier (at most 63 characters,
# a letter first, then letters, digits and single hyphens), so the prefix ends in one hyphen.
_THROWAWAY_PREFIX = re.compile(r"^[a-z](?:[a-z0-9]|-(?!-))*-$")
MAX_THROWAWAY_PREFIX = 63 - 16


def throwaway_prefix_from_env() -> str:
    """``THROWAWAY_PREFIX``: the deployment's ``<name prefix>-test-`` (infra.topology.Names.throwaway_prefix)."""
    value = _required("THROWAWAY_PREFIX")
    if not _THROWAWAY_PREFIX.match(value) or len(value) > MAX_THROWAWAY_PREFIX:
        raise ConfigurationError(
            f"environment variable THROWAWAY_PREFIX must start an RDS identifier (a lowercase letter, then "
            f"letters, digits and single hyphens, ending in a hyphen, at most {MAX_THROWAWAY_PREFIX} "
            f"characters), got {value!r}")
    return value


@dataclass(frozen=True)
class RestoreTestConfig:
    """``plan_restore_test``: the lease table (last tests and backups) and how throwaways are named."""

    table_name: str
    throwaway_prefix: str

    @classmethod
    def from_env(cls) -> RestoreTestConfig:
        return cls(table_name=_required("TABLE_NAME"), throwaway_prefix=throwaway_prefix_from_env())


@dataclass(frozen=True)
class SweeperConfig:
    """``sweep_orphans``: where to look (the policies' targets), what is old enough, the lease table, and
    the name restore tests give throwaways (only those are deleted)."""

    policies: dict[str, Any]
    table_name: str
    max_age_seconds: int
    throwaway_prefix: str
    temp_bucket_secret: str = ""

    @classmethod
    def from_env(cls) -> SweeperConfig:
        minutes = _optional_number("MAX_AGE_MINUTES", 360)
        return cls(
            policies=PoliciesConfig.from_env().policies,
            table_name=_required("TABLE_NAME"), temp_bucket_secret=_required("TEMP_BUCKET_SECRET"),
            max_age_seconds=int(minutes * 60), throwaway_prefix=throwaway_prefix_from_env(),
        )
