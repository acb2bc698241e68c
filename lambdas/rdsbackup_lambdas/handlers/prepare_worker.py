"""Lambda state ``prepare_worker``: network, credentials and (SQL Server) bucket for the image-level backup.

Finds the DB's endpoint, port, VPC, subnets, engine and credentials secret (its ARN: the password is
never read); creates the two temporary security groups (names from session + resource, so a retry reuses
them) and adds the DB group to the DB, keeping its own groups; for SQL Server checks the option group's
``SQLSERVER_BACKUP_RESTORE`` option and ensures the temporary bucket, its grant and this operation's lease.

Input:  ITEM with ``image_backup``.
Output: ``{"phase": "prepared", "db_security_group", "worker_security_group", "vpc_id", "subnets", "endpoint",
"port", "engine": "postgres"|"sqlserver", "secret_arn", "temp_bucket": str | null, "temp_prefix": str | null,
...}`` (``result_path`` ``$.image``).
Env:    ``TABLE_NAME`` (bucket leases and locks); optional ``LOCK_WAIT_SECONDS``.
Raises: ``CredentialsNotFound``, ``SqlServerBackupOptionMissing``, ``EngineNotSupported``, ``SecurityGroupError``,
``SourceNotFound``, ``DBNotAvailable``, ``Throttled``, ``TempBucketBusy``, ``WorkerFailed`` (bad worker subnets).
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas.config import ImageConfig
from rdsbackup_lambdas.image import worker
from rdsbackup_lambdas.models import Item
from rdsbackup_lambdas.observability import lambda_handler


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    item = Item.model_validate(event)
    return worker.prepare_worker(item, ImageConfig.from_env())
