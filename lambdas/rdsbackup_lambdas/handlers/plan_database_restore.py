"""Lambda state ``plan_database_restore``: turn a database-level restore into the ITEM the worker steps run.

Input:  ``{"input": <the execution input>, "execution_name", "started_at"}`` (docs/restore.md).
Output: the ITEM (the whole state from here on): ``session_id`` (the restore id), ``policy``, ``resource``
(the target DB), ``access_role_arn``, ``image_backup`` (the policy's repository and worker), ``wait``,
``restore_database`` (restore point, databases, target name, replace, include_globals) and ``request``.
Env:    ``POLICIES_FILE`` + ``POLICIES_SHA256`` (or ``POLICIES_JSON``).
Raises: ``RestoreInputInvalid``, ``UnknownPolicy``, ``PlaceNotConfigured``.
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas.config import PoliciesConfig
from rdsbackup_lambdas.observability import lambda_handler
from rdsbackup_lambdas.restore.database import parse_database_input, plan_database_restore


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    request = parse_database_input(event.get("input") or {})
    return plan_database_restore(request, PoliciesConfig.from_env().policies,
                                 execution_name=event.get("execution_name"), started_at=event.get("started_at"))
