"""Lambda state ``prepare_restore_test``: the test worker's two security groups in the source's VPC, and the
restore state machine's input that restores the throwaway into them (smallest class, private, temporary tags).

Input:  TEST. Output: ``{"image": ImageState, "restore_input": {...}, "started_at": <epoch seconds>}``.
Raises: ``SourceNotFound``, ``SecurityGroupError``, ``CredentialsNotFound``, ``EngineNotSupported``, ``Throttled``.
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas import restore_test
from rdsbackup_lambdas.observability import lambda_handler


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return restore_test.prepare(event)
