"""Lambda state ``start_maintenance``: start the backup-account session's worker (``rdsbackup maintain``).

Input:  ``{"policy", "execution_name", "wait": {initial_seconds, max_seconds, factor}}``.
Output: ``$.worker``: ``{"session_id", "policy", "task_arn", "cluster", "container", "result_url",
"started_at", "timeout_seconds", "wait", "attempt", "wait_seconds", "waited_seconds", "done"}``.
Env:    ``POLICIES_FILE`` + ``POLICIES_SHA256`` (or ``POLICIES_JSON``), ``NETWORK_JSON`` (config
``maintenance_network``).
Raises: ``UnknownPolicy``, ``ConfigurationError`` (no image-level backup, no default VPC), ``WorkerFailed``,
``Throttled``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from rdsbackup_lambdas import maintenance
from rdsbackup_lambdas.config import PoliciesConfig
from rdsbackup_lambdas.models import WaitSettings
from rdsbackup_lambdas.observability import lambda_handler


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    policies = PoliciesConfig.from_env().policies
    network = json.loads(os.environ.get("NETWORK_JSON") or "{}")
    return maintenance.start(str(event.get("policy") or ""), str(event["execution_name"]), policies, network,
                             WaitSettings(**(event.get("wait") or {})))
