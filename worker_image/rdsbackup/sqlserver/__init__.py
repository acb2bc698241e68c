"""SQL Server backup through RDS native backup (`msdb.dbo.rds_backup_database`) into a temporary S3
bucket, each `.bak` then streamed into the repository; and the restore back (`rds_restore_database`)."""

from .backup import PollPolicy, backup_sqlserver, object_name
from .connection import SqlServerInfo, connect
from .errors import (
    BackupFileMissing,
    NativeBackupFailed,
    NativeBackupTimeout,
    NativeBackupUnavailable,
    SqlServerAuthenticationFailed,
    SqlServerDatabaseExists,
    SqlServerDatabaseNotFound,
    SqlServerError,
    SqlServerTlsFailed,
    SqlServerUnreachable,
)
from .restore import restore_sqlserver

__all__ = [
    "BackupFileMissing",
    "NativeBackupFailed",
    "NativeBackupTimeout",
    "NativeBackupUnavailable",
    "PollPolicy",
    "SqlServerAuthenticationFailed",
    "SqlServerDatabaseExists",
    "SqlServerDatabaseNotFound",
    "SqlServerError",
    "SqlServerInfo",
    "SqlServerTlsFailed",
    "SqlServerUnreachable",
    "backup_sqlserver",
    "connect",
    "object_name",
    "restore_sqlserver",
]
