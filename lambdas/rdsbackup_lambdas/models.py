"""Typed models of the JSON that flows between the states (see docs/state-machine-contract.md).

Input models ignore keys they do not know: the ITEM accumulates the results of earlier states, and a
handler reads only what it needs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Kind = Literal["instance", "cluster"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class WaitSettings(_Model):
    """How a polling loop grows its interval and when it gives up."""

    initial_seconds: int = Field(15, ge=0)
    max_seconds: int = Field(300, ge=1)
    factor: float = Field(2, ge=1)
    timeout_seconds: int = Field(7200, ge=1)
    # how long a resource waits for a free slot (snapshot creations / copies in progress) before failing
    slot_timeout_seconds: int = Field(4 * 3600, ge=1)

    def for_slots(self) -> WaitSettings:
        """The same growing interval, bounded by the slot wait's timeout."""
        return self.model_copy(update={"timeout_seconds": self.slot_timeout_seconds})


class Resource(_Model):
    """A DB instance or Aurora DB cluster selected for backup."""

    arn: str
    id: str
    kind: Kind
    account: str
    region: str
    engine: str = "unknown"


class Replication(_Model):
    """Where the snapshot is copied to: a region and/or an account (both when they differ)."""

    region: str
    account: str
    kms_key_arn: str | None = None
    access_role_arn: str | None = None
    staging_kms_key_arn: str | None = None
    retention: int = Field(7, ge=1)


class Lease(_Model):
    owner: str
    expires_at: int
    acquired_at: float | None = None


class SnapshotRef(_Model):
    """A snapshot made by this tool (the primary, a staging copy or a replica)."""

    arn: str
    id: str
    kind: Kind
    account: str
    region: str
    kms_key_id: str | None = None
    encrypted: bool = False


class PollState(_Model):
    """The previous result of a polling handler, passed back by the Wait/Choice loop."""

    attempt: int = 0
    wait_seconds: int = 0
    waited_seconds: int = 0


class PendingSnapshot(PollState):
    """``$.snapshot`` while ``create_snapshot`` waits for a free snapshot slot (nothing created yet)."""

    started: Literal[False] = False


class ReplicaState(PollState):
    done: bool = False
    phase: str = "start"
    arn: str | None = None
    staging_arn: str | None = None
    steps: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


class WorkerEgress(_Model):
    """``image_backup.worker.egress``: the VPC endpoints the worker's HTTPS may reach."""

    prefix_lists: list[str] = Field(default_factory=list)
    security_groups: list[str] = Field(default_factory=list)


class WorkerSettings(_Model):
    """The temporary worker of an image-level backup (an ECS task in the resource's account and region)."""

    launch_type: Literal["FARGATE", "EC2"] = "FARGATE"
    subnets: list[str] = Field(default_factory=list)
    cpu: int = Field(1024, ge=256)
    memory: int = Field(2048, ge=512)
    timeout_seconds: int = Field(14400, ge=1)
    cluster: str = "rdsbackup-workers"
    task_family: str = "rdsbackup-worker"
    container: str = "worker"
    capacity_provider: str | None = None
    egress: WorkerEgress | None = None


class BackupRetention(_Model):
    keep_last: int | None = Field(7, ge=1)
    keep_days: int | None = Field(None, ge=1)


class ImageBackup(_Model):
    """The policy's ``image_backup`` section, copied into every ITEM by ``resolve_policy``."""

    # None for a snapshot-only policy's restore-test worker (it restores no restore point of its own)
    repository_url: str | None = None
    repository_kms_key_arn: str | None = None
    retention: BackupRetention = Field(default_factory=BackupRetention)
    secret_arn: str | None = None
    result_prefix: str
    worker: WorkerSettings = Field(default_factory=WorkerSettings)


class ImageState(PollState):
    """``$.image``: what ``prepare_worker`` made, extended by ``start_worker`` and ``check_worker``."""

    phase: str = "prepared"
    db_security_group: str | None = None
    worker_security_group: str | None = None
    vpc_id: str | None = None
    subnets: list[str] = Field(default_factory=list)
    endpoint: str | None = None
    port: int | None = None
    engine: str | None = None
    resource_id: str | None = None
    secret_arn: str | None = None
    temp_bucket: str | None = None
    temp_prefix: str | None = None
    task_arn: str | None = None
    started_at: float | None = None
    done: bool = False
    restore_point_id: str | None = None
    bytes: int | None = None
    new_bytes: int | None = None
    duration_seconds: float | None = None


class Item(_Model):
    """One resource's context in the Map iteration (ITEM in the contract)."""

    session_id: str
    policy: str
    resource: Resource
    access_role_arn: str | None = None
    staging_kms_key_arn: str | None = None
    snapshot_retention: int = Field(7, ge=1)
    # retention never deletes a snapshot younger than this (issue 14: a burst of sessions cannot flush history)
    retention_min_age_seconds: int = Field(0, ge=0)
    replication: Replication | None = None
    lease_seconds: int = Field(7200, ge=1)
    wait: WaitSettings = Field(default_factory=WaitSettings)
    lease: Lease | None = None
    snapshot: SnapshotRef | PendingSnapshot | None = None
    snapshot_wait: PollState | None = None
    replica: ReplicaState | None = None
    image_backup: ImageBackup | None = None
    image: ImageState | None = None
    # a restore test's TEST: what the worker restores and checks on the throwaway (``resource``)
    restore_test: dict | None = None
    # a database-level restore: what the worker restores into ``resource`` (the restore state machine)
    restore_database: dict | None = None

    def require_snapshot(self) -> SnapshotRef:
        if not isinstance(self.snapshot, SnapshotRef):
            raise ValueError(f"ITEM for {self.resource.arn} has no 'snapshot' (create_snapshot must run first)")
        return self.snapshot


# --- policies (POLICIES_JSON) -------------------------------------------------------------------


class Target(_Model):
    """An account+region the policy selects resources in, with the role to reach it."""

    account: str
    region: str
    access_role_arn: str | None = None
    staging_kms_key_arn: str | None = None


class Selection(_Model):
    resources: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)
    targets: list[Target]

    @field_validator("targets")
    @classmethod
    def _at_least_one_target(cls, targets: list[Target]) -> list[Target]:
        if not targets:
            raise ValueError("a policy selection needs at least one target (account+region)")
        return targets


class PolicyReplication(_Model):
    region: str | None = None
    account: str | None = None
    kms_key_arn: str | None = None
    access_role_arn: str | None = None
    staging_kms_key_arn: str | None = None
    retention: int = Field(7, ge=1)


class Policy(_Model):
    selection: Selection
    snapshot_retention: int = Field(7, ge=1)
    # retention never deletes a snapshot younger than this (issue 14: a burst of sessions cannot flush history)
    retention_min_age_seconds: int = Field(0, ge=0)
    concurrency: int = Field(4, ge=1)
    max_resources: int = Field(1000, ge=1)
    lease_seconds: int = Field(7200, ge=1)
    wait: WaitSettings = Field(default_factory=WaitSettings)
    replication: PolicyReplication | None = None
    image_backup: ImageBackup | None = None


class ResolvePolicyInput(_Model):
    policy: str
    resources: list[str] | None = None
    execution_name: str | None = None
    started_at: str | None = None


class SessionReportInput(_Model):
    """The session (its results are read from where the resources recorded them); or, when
    ``resolve_policy`` failed, no session but the policy, execution name, start time and the error."""

    session: dict | None = None
    error: dict | None = None
    policy: str | None = None
    execution_name: str | None = None
    started_at: str | None = None
