"""SQL Server backup through RDS native backup (`msdb.dbo.rds_backup_database`) into a temporary S3
bucket, each `.bak` then streamed into the repository."""

from .backup import PollPolicy, backup_sqlserver, object_name
from .connection import SqlServerInfo, connect
from .errors import (
    BackupFileMissing,
    NativeBackupFailed,
    NativeBackupTimeout,
    NativeBackupUnavailable,
    SqlServerAuthenticationFailed,
    SqlServerDatabaseNotFound,
    SqlServerError,
    SqlServerTlsFailed,
    SqlServerUnreachable,
)

__all__ = [
    "BackupFileMissing",
    "NativeBackupFailed",
    "NativeBackupTimeout",
    "NativeBackupUnavailable",
    "PollPolicy",
    "SqlServerAuthenticationFailed",
    "SqlServerDatabaseNotFound",
    "SqlServerError",
    "SqlServerInfo",
    "SqlServerTlsFailed",
    "SqlServerUnreachable",
    "backup_sqlserver",
    "connect",
    "object_name",
]
