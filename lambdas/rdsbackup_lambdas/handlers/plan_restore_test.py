"""Lambda state ``plan_restore_test``: the sources a restore-test run tests and what it restores for each.

Input:  ``{"policy": "<name>", "resources": null | ["<arn or id>"], "execution_name", "started_at"}``.
Output: ``{"session": {"session_id", "policy", "started_at"}, "tests": [TEST, ...]}`` (TEST: an ITEM whose
``resource`` is the throwaway, plus ``source``, ``restore_test`` and ``error`` when there is nothing to test).
Env:    ``POLICIES_FILE`` + ``POLICIES_SHA256`` (or ``POLICIES_JSON``), ``TABLE_NAME``, ``THROWAWAY_PREFIX``
(``<deployment name prefix>-test-``: the throwaways' names).
Raises: ``UnknownPolicy``, ``NoResourcesSelected``, ``ResourceNotInPolicy``, ``Throttled``.
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas import restore_test
from rdsbackup_lambdas.config import PoliciesConfig, RestoreTestConfig
from rdsbackup_lambdas.models import ResolvePolicyInput
from rdsbackup_lambdas.observability import lambda_handler


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    request = ResolvePolicyInput.model_validate(event)
    config = RestoreTestConfig.from_env()
    return restore_test.plan(request.policy, PoliciesConfig.from_env().policies, config.table_name,
                             execution_name=request.execution_name, started_at=request.started_at,
                             resources=request.resources, throwaway_prefix=config.throwaway_prefix)
