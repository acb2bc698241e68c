"""Errors of the PostgreSQL worker. Messages are one line and name what failed; never a password."""


from ..errors import RdsBackupError


class PostgresError(RdsBackupError):
    """Base of every PostgreSQL backup/restore error."""


class ServerUnreachable(PostgresError):
    """The server did not answer (wrong host/port, network, security group)."""


class TlsFailed(PostgresError):
    """TLS to the server failed: the certificate did not verify against the CA bundle, the host name
    does not match it, the bundle is missing, or the server does not speak TLS."""


class AuthenticationFailed(PostgresError):
    """The server refused the credentials."""


class DatabaseNotFound(PostgresError):
    """A database named by the user does not exist (on the server or in the restore point)."""


class TargetNotEmpty(PostgresError):
    """The restore target database exists and holds objects, and replacing it was not asked for."""


class ToolFailed(PostgresError):
    """pg_dump, pg_dumpall, pg_restore or psql failed."""


class BackupFailed(PostgresError):
    """A backup could not complete (no restore point was written)."""


class RestoreFailed(PostgresError):
    """A restore could not complete."""


class LockConflict(BackupFailed):
    """A table could not be locked within the lock timeout (another session holds or awaits a lock
    that conflicts); the message names the table and the session."""
