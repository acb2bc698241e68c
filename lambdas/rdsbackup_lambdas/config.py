"""Environment of each handler, parsed once at cold start into a frozen dataclass.

``from_env()`` fails loudly (``ConfigurationError`` naming the variable) so a wiring mistake in the
CDK app shows up on the first invocation with a clear message instead of a ``KeyError`` deep inside.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from rdsbackup_lambdas.errors import ConfigurationError


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
        # The deployed app keeps the policies in an SSM parameter (Lambda's 4 KB of environment is too
        # small for many policies); POLICIES_JSON inline serves tests and small setups.
        parameter = os.environ.get("POLICIES_PARAMETER", "").strip()
        raw = _policies_from_parameter(parameter) if parameter else _required("POLICIES_JSON")
        try:
            policies = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"POLICIES_JSON is not valid JSON: {exc}") from exc
        if not isinstance(policies, dict):
            raise ConfigurationError("POLICIES_JSON must be a JSON object {policy name: policy}")
        return cls(policies=policies)


def _policies_from_parameter(name: str) -> str:
    import boto3  # only this path needs AWS at configuration time

    try:
        return boto3.client("ssm").get_parameter(Name=name)["Parameter"]["Value"]
    except Exception as exc:  # any failure to read the configuration is a configuration error
        raise ConfigurationError(f"cannot read the policies from SSM parameter {name!r}: {exc}") from exc


@dataclass(frozen=True)
class LeaseConfig:
    """``acquire_lease`` / ``release_lease``: the DynamoDB table of sessions and leases."""

    table_name: str

    @classmethod
    def from_env(cls) -> LeaseConfig:
        return cls(table_name=_required("TABLE_NAME"))


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

    @classmethod
    def from_env(cls) -> ImageConfig:
        return cls(
            table_name=_required("TABLE_NAME"),
            delete_attempts=max(1, int(_optional_number("SG_DELETE_ATTEMPTS", 10))),
            delete_interval_seconds=_optional_number("SG_DELETE_INTERVAL_SECONDS", 5.0),
            lock_wait_seconds=_optional_number("LOCK_WAIT_SECONDS", 60.0),
        )


@dataclass(frozen=True)
class SweeperConfig:
    """``sweep_orphans``: where to look (the policies' targets), what is old enough, the lease table."""

    policies: dict[str, Any]
    table_name: str
    max_age_seconds: int

    @classmethod
    def from_env(cls) -> SweeperConfig:
        minutes = _optional_number("MAX_AGE_MINUTES", 360)
        return cls(
            policies=PoliciesConfig.from_env().policies,
            table_name=_required("TABLE_NAME"),
            max_age_seconds=int(minutes * 60),
        )
