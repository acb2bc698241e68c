"""Lambda state ``resolve_policy``: the policy's resources and the backup session.

The items go to the sessions bucket (the Distributed Map reads them from there), so the state's
output stays the same size whatever the number of resources.

Input:  ``{"policy": "<name>", "resources": null | ["<arn or id>", ...], "execution_name": "...",
"started_at": "<ISO time>"}``.
Output: ``{"session_id", "policy", "started_at", "max_concurrency", "resource_count", "items_key"}``;
``items_key`` names the JSON array of ITEMs in ``SESSIONS_BUCKET``.
Env:    ``POLICIES_FILE`` (or ``POLICIES_JSON``), ``SESSIONS_BUCKET``, ``RESULTS_TABLE``.
Raises: ``UnknownPolicy``, ``NoResourcesSelected``, ``ResourceNotInPolicy``, ``Throttled``.
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas import selection, session_store
from rdsbackup_lambdas.config import PoliciesConfig, SessionStoreConfig
from rdsbackup_lambdas.models import ResolvePolicyInput
from rdsbackup_lambdas.observability import correlate, lambda_handler


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    request = ResolvePolicyInput.model_validate(event)
    config = PoliciesConfig.from_env()
    store = SessionStoreConfig.from_env()
    session_id = selection.session_id_for(request.policy, request.execution_name, request.started_at)
    correlate(session_id, policy=request.policy)
    session = selection.resolve_policy(request, config.policies)
    items = session.pop("items")
    return {**session, "resource_count": len(items),
            "items_key": session_store.put_items(store.bucket, session_id, items)}
