"""Environment of the restore handlers, parsed once at cold start."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from rdsbackup_lambdas.errors import ConfigurationError, PlaceNotConfigured
from rdsbackup_lambdas.models import WaitSettings


@dataclass(frozen=True)
class RestoreConfig:
    """``RESTORE_ROLES``: ``{"<account>/<region>": "<role ARN>"}`` for every place the config reaches (the
    control stack writes it); ``TAG_KMS_KEY_ARN``: the key of the snapshots' metadata; the waits."""

    roles: dict[str, str]
    tag_kms_key_arn: str
    wait: WaitSettings

    @classmethod
    def from_env(cls) -> RestoreConfig:
        try:
            roles = json.loads(os.environ.get("RESTORE_ROLES", "") or "{}")
        except ValueError as exc:
            raise ConfigurationError(f"RESTORE_ROLES is not JSON: {exc}") from exc
        key = os.environ.get("TAG_KMS_KEY_ARN", "").strip()
        if not key:
            raise ConfigurationError("environment variable TAG_KMS_KEY_ARN is not set (the CDK app must set it)")
        wait = json.loads(os.environ.get("RESTORE_WAIT", "") or "{}")
        return cls(roles=roles, tag_kms_key_arn=key, wait=WaitSettings.model_validate(wait))

    def role_for(self, account: str, region: str, what: str) -> str:
        role = self.roles.get(f"{account}/{region}")
        if not role:
            reached = ", ".join(sorted(self.roles)) or "none"
            raise PlaceNotConfigured(
                f"{what} is in account {account} region {region}, which this deployment does not reach "
                f"(reached: {reached}); add a policy or replication target there and deploy")
        return role
