"""Lambda state ``plan_restore``: verify the snapshot's metadata and decide how to restore it.

Input:  ``{"input": <the execution input>, "execution_name", "started_at"}`` (docs/restore.md).
Output: the plan (``rdsbackup_lambdas.restore.models.Plan``) at ``$.plan``: restore id, kind, mode,
target place and role, the restore call's parameters, the cluster's instances (writer first), the
renames of mode replace, which settings came from the metadata and which from the input.
Env:    ``RESTORE_ROLES``, ``TAG_KMS_KEY_ARN``, ``RESTORE_WAIT``, the policies (``POLICIES_FILE``: which
databases mode "replace" may rename).
Raises: ``RestoreInputInvalid``, ``PlaceNotConfigured``, ``TagMetadataTampered`` (altered or moved),
``TagMetadataWrongKey``, ``TagMetadataMissing``, ``SettingsMissing``, ``SnapshotFailed``, ``TargetExists``,
``TargetNotFound``, ``TargetNotReplaceable``, ``Throttled``.
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas import snapshot_steps
from rdsbackup_lambdas.config import PoliciesConfig
from rdsbackup_lambdas.observability import lambda_handler
from rdsbackup_lambdas.restore.config import RestoreConfig
from rdsbackup_lambdas.restore.models import parse_input
from rdsbackup_lambdas.restore.plan import plan_restore


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    config = RestoreConfig.from_env()
    request = parse_input(event.get("input") or {})
    return plan_restore(request, config, snapshot_steps.tag_codec(config.tag_kms_key_arn),
                        policies=PoliciesConfig.from_env().policies, execution_name=event.get("execution_name"),
                        started_at=event.get("started_at"))
