"""Scheduled Lambda ``sweep_orphans``: remove image-level backup leftovers older than a bound.

In every account+region where a policy runs a worker (through the launch roles): worker tasks with the
rds-backup ``startedBy`` prefix, temporary security groups (``rdsbackup:temporary=true``; detached from
DBs first), temporary buckets without a live lease, restore tests' throwaways (named ``<THROWAWAY_PREFIX>*``,
tagged temporary and restore-test; no final snapshot); and expired leases in the table. Anything whose session
still holds the source's lease is left alone.

Input:  any (the schedule's event is ignored).
Output: ``{"removed": {"tasks": [...], "security_groups": [...], "buckets": [...], "leases": [...],
"throwaways": [...]},
"kept": [...], "errors": [...]}``.
Env:    ``POLICIES_JSON``, ``TABLE_NAME``, ``TEMP_BUCKET_SECRET``, ``THROWAWAY_PREFIX`` (``<deployment name
prefix>-test-``), optional ``MAX_AGE_MINUTES`` (360).
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas.config import SweeperConfig
from rdsbackup_lambdas.image import sweeper
from rdsbackup_lambdas.observability import lambda_handler


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return sweeper.sweep(SweeperConfig.from_env())
