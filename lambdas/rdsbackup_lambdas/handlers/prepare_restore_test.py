"""Lambda state ``prepare_restore_test``: the test worker's two security groups in the source's VPC, for a SQL
Server restore point the temporary bucket (lease, and its prefix granted to the option group's role), and the
restore state machine's input that restores the throwaway into the groups (smallest class, private, temporary
tags). Through the launch role, like the backup's ``prepare_worker``; ``cleanup_worker`` removes it all.

Input:  TEST. Output: ``{"image": ImageState (``temp_bucket``/``temp_prefix`` set for a SQL Server restore
point), "restore_input": {...}, "started_at": <epoch seconds>}``.
Env:    ``TABLE_NAME`` (bucket leases and locks), ``TEMP_BUCKET_SECRET``; optional ``LOCK_WAIT_SECONDS``.
Raises: ``SourceNotFound``, ``SecurityGroupError``, ``CredentialsNotFound``, ``EngineNotSupported``,
``SqlServerBackupOptionMissing``, ``TempBucketBusy``, ``Throttled``.
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas import restore_test
from rdsbackup_lambdas.config import ImageConfig
from rdsbackup_lambdas.observability import lambda_handler


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return restore_test.prepare(event, ImageConfig.from_env())
