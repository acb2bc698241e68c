"""Lambda state ``delete_throwaway``: delete the restore test's throwaway (no final snapshot), polled until it
is gone; what cannot be deleted is tagged ``rdsbackup:sweep=true`` and reported. Runs on every path.

Input:  TEST. Output: ``{"done", "deleted": [...], "left_for_sweeper": [...], "warnings": [...]}``.
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas import restore_test
from rdsbackup_lambdas.observability import lambda_handler


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return restore_test.delete_throwaway(event)
