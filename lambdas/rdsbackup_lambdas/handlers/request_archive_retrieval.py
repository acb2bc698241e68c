"""Lambda state ``request_archive_retrieval``: a database-level restore from the archive repository asks S3
to retrieve the packs its restore point needs (lambdas/rdsbackup_lambdas/restore/archive_retrieval.py).

Input:  ``{"retrieval": $.retrieval}`` as ``plan_database_restore`` made it (archive URL, restore point, class, tier,
        days, bound).
Output: ``$.retrieval`` + ``{"ready", "packs", "bytes", "waiting", "waiting_bytes", "requested", "attempt",
        "wait_seconds", "waited_seconds"}``.
Env:    none (the archive is opened with its KMS key).
Raises: ``ArchiveRetrievalFailed``.
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas.observability import lambda_handler
from rdsbackup_lambdas.restore.archive_retrieval import Retrieval, poll


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return poll(Retrieval.model_validate(event["retrieval"]), first=True)
