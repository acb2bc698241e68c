"""PostgreSQL backup and restore: per database an exported snapshot, pg_dump for the schema, one
repository stream per table (rows in primary-key order), large objects, and the cluster globals."""

from .backup import backup_postgres
from .connection import ConnectionInfo
from .errors import (
    AuthenticationFailed,
    BackupFailed,
    DatabaseNotFound,
    LockConflict,
    PostgresError,
    RestoreFailed,
    ServerUnreachable,
    TargetNotEmpty,
    TlsFailed,
    ToolFailed,
)
from .restore import restore_point_metadata, restore_postgres

__all__ = [
    "AuthenticationFailed",
    "BackupFailed",
    "ConnectionInfo",
    "DatabaseNotFound",
    "LockConflict",
    "PostgresError",
    "RestoreFailed",
    "ServerUnreachable",
    "TargetNotEmpty",
    "TlsFailed",
    "ToolFailed",
    "backup_postgres",
    "restore_point_metadata",
    "restore_postgres",
]
