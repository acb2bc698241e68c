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
        raw = _required("POLICIES_JSON")
        try:
            policies = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"POLICIES_JSON is not valid JSON: {exc}") from exc
        if not isinstance(policies, dict):
            raise ConfigurationError("POLICIES_JSON must be a JSON object {policy name: policy}")
        return cls(policies=policies)


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
