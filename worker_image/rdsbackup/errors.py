"""Errors of the rdsbackup worker. Each class name says what went wrong; each message is one line.

The CLI prints `str(error)` on stderr and exits 1, so messages name the repository, the object and,
where known, the restore point.
"""


class RdsBackupError(Exception):
    """Base of every error the worker raises on purpose."""


class RepositoryError(RdsBackupError):
    """Base of every repository error."""


class RepositoryNotFound(RepositoryError):
    """There is no repository at the URL (no `config` object)."""


class RepositoryExists(RepositoryError):
    """`init` was asked to create a repository where one already exists."""


class ObjectExists(RepositoryError):
    """An immutable object was to be written where another object of that name (other content) exists:
    repository objects are never overwritten (S3 conditional writes, `If-None-Match: *`)."""

    def __init__(self, message: str, *, object_name: str | None = None):
        super().__init__(message)
        self.object_name = object_name


class WrongRepositoryKey(RepositoryError):
    """The passphrase or KMS key does not open the repository's master key."""


class UnsupportedFormatVersion(RepositoryError):
    """The repository was written by a newer rdsbackup (or is not an rdsbackup repository)."""


class CorruptObject(RepositoryError):
    """An object failed authentication or its content does not match its id."""

    def __init__(self, message: str, *, object_name: str | None = None, restore_point: str | None = None):
        super().__init__(message)
        self.object_name = object_name
        self.restore_point = restore_point


class MissingObject(RepositoryError):
    """An object that the index or a manifest refers to is not in the repository."""

    def __init__(self, message: str, *, object_name: str | None = None, restore_point: str | None = None):
        super().__init__(message)
        self.object_name = object_name
        self.restore_point = restore_point


class ArchivedObject(RepositoryError):
    """An object sits in a cold storage class (Glacier Flexible Retrieval, Deep Archive) and must be
    retrieved (S3 RestoreObject) before it can be read."""

    def __init__(self, message: str, *, object_name: str | None = None):
        super().__init__(message)
        self.object_name = object_name


class RestorePointNotFound(RepositoryError):
    """No manifest has the given restore point id."""


class RepositoryLocked(RepositoryError):
    """Another process holds a lock that conflicts with the requested operation."""


class BackupAborted(RepositoryError):
    """A backup failed (e.g. an upload failed) and can no longer be committed."""


class LockLost(RepositoryError):
    """A lock holder could not refresh its lock within the bound (paused, or the repository was
    unreachable): a prune may have run meanwhile, so it stops without writing anything that depends
    on the lock."""


class RepositoryDamaged(RepositoryError):
    """A repository object (config, key, index, manifest, pack, lock) is damaged; the message names it,
    says what is wrong and which command repairs it."""
