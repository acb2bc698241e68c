"""Lambda state ``check_archive_retrieval``: one poll of the archive retrieval's Wait/Choice loop. Asks again
for packs whose retrieval was not asked for or has expired; ready once every pack is readable.

Input:  ``{"retrieval": $.retrieval}`` (from ``request_archive_retrieval``, then the previous poll).
Output: ``$.retrieval`` as ``request_archive_retrieval`` returns it, with the next (growing) wait.
Env:    none.
Raises: ``ArchiveRetrievalTimedOut`` (past ``archive.retrieval_timeout_hours``), ``ArchiveRetrievalFailed``.
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas.observability import lambda_handler
from rdsbackup_lambdas.restore.archive_retrieval import Retrieval, poll


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return poll(Retrieval.model_validate(event["retrieval"]), first=False)
