"""Lambda state ``locate_throwaway``: after the restore, the throwaway's endpoint for the worker; refuses a
throwaway that is publicly accessible or has any security group but the test's own.

Input:  TEST with ``image``. Output: ``image`` with ``endpoint`` and ``port``.
Raises: ``SourceNotFound``, ``SecurityGroupError``, ``Throttled``.
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas import restore_test
from rdsbackup_lambdas.observability import lambda_handler


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return restore_test.locate(event)
