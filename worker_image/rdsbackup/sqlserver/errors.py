"""Errors of the SQL Server worker. Messages are one line and name what failed; never a password."""

from ..errors import RdsBackupError


class SqlServerError(RdsBackupError):
    """Base of every SQL Server backup error."""


class SqlServerUnreachable(SqlServerError):
    """The server did not answer (wrong host/port, network, security group)."""


class SqlServerAuthenticationFailed(SqlServerError):
    """The server refused the credentials."""


class SqlServerTlsFailed(SqlServerError):
    """TLS to the server failed (certificate not verified against the CA bundle, host name mismatch)."""


class NativeBackupUnavailable(SqlServerError):
    """The DB instance cannot run RDS native backup: its option group lacks SQLSERVER_BACKUP_RESTORE."""


class NativeBackupFailed(SqlServerError):
    """`rds_backup_database` refused the backup, or its task ended in ERROR or CANCELLED."""


class NativeBackupTimeout(SqlServerError):
    """The native backup task did not finish within the bound."""


class BackupFileMissing(SqlServerError):
    """The task said SUCCESS but its `.bak` is not in the temporary bucket (or could not be read)."""


class SqlServerDatabaseNotFound(SqlServerError):
    """A database named by the user does not exist on the server."""


class SqlServerDatabaseExists(SqlServerError):
    """A restore would overwrite an existing database and `replace` was not given."""
