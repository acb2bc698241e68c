"""Lambda state ``delete_throwaway``: delete the restore test's throwaway (no final snapshot), polled until it
is gone; what cannot be deleted is tagged ``rdsbackup:sweep=true`` and reported. Runs on every path.

Input:  TEST. Output: ``{"done", "deleted": [...], "left_for_sweeper": [...], "warnings": [...], "attempt",
"wait_seconds", "waited_seconds"}``.
Env:    ``RESTORE_ROLES`` (``{"<account>/<region>": "<restore role ARN>"}``: the role that may delete what a restore
made; without one, the TEST's access role).
"""

from __future__ import annotations

import json
import os
from typing import Any

from rdsbackup_lambdas import restore_test
from rdsbackup_lambdas.observability import lambda_handler


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return restore_test.delete_throwaway(event, json.loads(os.environ.get("RESTORE_ROLES") or "{}"))
