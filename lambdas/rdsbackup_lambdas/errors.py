"""Exceptions raised by the handlers.

The class name of each exception is the Step Functions error name (the Lambda runtime reports it as
``errorType``), so the state machine retries and catches by these names. Never rename one without
changing ``docs/state-machine-contract.md`` and the state machine.
"""

from __future__ import annotations


class RdsBackupError(Exception):
    """Base class: every error this package raises on purpose."""


# Retried by the state machine (backoff + full jitter), then caught.
class Throttled(RdsBackupError):
    """AWS throttled the call (Throttling, ThrottlingException, RequestLimitExceeded)."""


class SnapshotQuotaExceeded(RdsBackupError):
    """The account/region has reached its manual snapshot quota."""


class DBNotAvailable(RdsBackupError):
    """The DB instance or cluster is in a state that does not allow a snapshot (stopped, modifying...)."""


# Caught only.
class ManualSnapshotQuotaFull(RdsBackupError):
    """The account-region's manual-snapshot quota is used up (``describe_account_attributes``); not retried."""


class SlotWaitTimeout(RdsBackupError):
    """No slot (snapshot creations / copies in progress) came free within the configured wait."""


class LeaseHeld(RdsBackupError):
    """Another session holds the per-source lease: a backup of that source is already running."""


class SourceNotFound(RdsBackupError):
    """The DB instance or cluster to back up does not exist (or the role cannot see it)."""


class SnapshotFailed(RdsBackupError):
    """A snapshot (or a copy) went into a failed state, disappeared, or its name is taken by another."""


class SnapshotWaitTimeout(RdsBackupError):
    """A snapshot did not become available within the wait timeout."""


class ReplicationTimeout(RdsBackupError):
    """A replica (or its staging copy) did not become available within the wait timeout."""


class ReplicationNotPossible(RdsBackupError):
    """The replication target cannot be reached from this snapshot as configured."""


class TagLimitExceeded(RdsBackupError):
    """The metadata tags do not fit within AWS's tag limits together with the resource's own tags."""


class TagMetadataError(RdsBackupError):
    """The encrypted metadata tags of a snapshot cannot be trusted or read."""


class TagMetadataTampered(TagMetadataError):
    """The metadata tags were altered (authentication failed)."""


class TagMetadataIdentityMismatch(TagMetadataTampered):
    """The metadata tags were made for another snapshot (copied or moved onto this one)."""


class TagMetadataWrongKey(TagMetadataError):
    """The metadata tags were encrypted under another KMS key than the one this deployment uses."""


class TagMetadataMissing(TagMetadataError):
    """The snapshot carries no metadata tags, or some of their parts are missing."""


class ReplicationTargetNotConfigured(RdsBackupError):
    """The execution's item names a replication target (account, region, key, role or retention) that its
    policy, as shipped with the code, does not configure: a tampered input is refused."""


class UnknownPolicy(RdsBackupError):
    """The execution input names a policy that is not configured."""


class NoResourcesSelected(RdsBackupError):
    """The policy's selection matched no DB instance or cluster."""


class TooManyResources(RdsBackupError):
    """The policy selects more resources than its ``max_resources`` (the session's timeout is derived from it)."""


class ResourceNotInPolicy(RdsBackupError):
    """The execution input asks for a resource that the policy does not select."""


class ConfigurationError(RdsBackupError):
    """The function's environment is missing or malformed (a deployment bug, never retried)."""


# Image-level backup (issue 5).
class CredentialsNotFound(RdsBackupError):
    """The DB has no RDS-managed master secret and the policy names no ``image_backup.secret_arn``."""


class EngineNotSupported(RdsBackupError):
    """The DB's engine has no image-level backup (only PostgreSQL and SQL Server do)."""


class SqlServerBackupOptionMissing(RdsBackupError):
    """The SQL Server DB's option group lacks the ``SQLSERVER_BACKUP_RESTORE`` option (or its IAM role)."""


class SecurityGroupError(RdsBackupError):
    """The temporary security groups could not be made or attached to the DB."""


class TempBucketBusy(RdsBackupError):
    """Another operation holds the temporary bucket's lock for longer than we wait (retried)."""


class WorkerFailed(RdsBackupError):
    """The worker failed to start, exited non-zero, or reported a failed backup (the message says why)."""


class WorkerTimedOut(RdsBackupError):
    """The worker ran past the worker settings' ``timeout_seconds``; it was stopped."""


class CleanupIncomplete(RdsBackupError):
    """Something could not be removed; never raised to the state machine (reported as a warning)."""


# Restore (issue 12).
class RestoreInputInvalid(RdsBackupError):
    """The restore execution input is malformed or inconsistent (the message names the field)."""


class PlaceNotConfigured(RdsBackupError):
    """The snapshot or the target is in an account/region this deployment does not reach."""


class SettingsMissing(RdsBackupError):
    """The snapshot carries no rds-backup metadata and the input does not give every setting itself."""


class TargetExists(RdsBackupError):
    """A DB instance or cluster with the target identifier exists already (mode "new")."""


class TargetNotFound(RdsBackupError):
    """Mode "replace" names a DB instance or cluster that does not exist."""


class TargetNotReplaceable(RdsBackupError):
    """Mode "replace" names a database (or a cluster with a member) the restore role may not rename: no
    policy selects it in that place and no restore made it."""


class RestoreFailed(RdsBackupError):
    """A restored DB instance or cluster went into a failed state or disappeared."""


class RestoreWaitTimeout(RdsBackupError):
    """A restored (or renamed, or deleted) DB instance or cluster did not reach its state within the wait timeout."""


# Restore from the archive repository (issue 13).
class ArchiveRetrievalFailed(RdsBackupError):
    """The archive repository could not be read, or S3 refused a retrieval request (the message says why)."""


class ArchiveRetrievalTimedOut(RdsBackupError):
    """The packs of an archived restore point were not all retrieved within ``archive.retrieval_timeout_hours``."""
