"""Lambda state ``resolve_policy``: the policy's resources and the backup session.

Input:  ``{"policy": "<name>", "resources": null | ["<arn or id>", ...], "execution_name": "...",
"started_at": "<ISO time>"}``.
Output: ``{"session_id", "policy", "started_at", "max_concurrency", "items": [ITEM, ...]}``.
Env:    ``POLICIES_JSON``.
Raises: ``UnknownPolicy``, ``NoResourcesSelected``, ``ResourceNotInPolicy``, ``Throttled``.
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas import selection
from rdsbackup_lambdas.config import PoliciesConfig
from rdsbackup_lambdas.models import ResolvePolicyInput
from rdsbackup_lambdas.observability import correlate, lambda_handler


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    request = ResolvePolicyInput.model_validate(event)
    config = PoliciesConfig.from_env()
    session_id = selection.session_id_for(request.policy, request.execution_name, request.started_at)
    correlate(session_id, policy=request.policy)
    return selection.resolve_policy(request, config.policies)
