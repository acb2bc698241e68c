"""The JSON of the restore state machine: its input (``docs/restore.md``) and the plan every step reads."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rdsbackup_lambdas.errors import RestoreInputInvalid
from rdsbackup_lambdas.models import Kind, PollState, WaitSettings

# RDS identifier rules (checked with Python's re: pydantic's regex engine has no look-around)
IDENTIFIER = re.compile(r"^[A-Za-z](?:[A-Za-z0-9]|-(?!-))*(?<!-)$")
MAX_IDENTIFIER = 63


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class SnapshotTarget(_Strict):
    """Where and how to restore; every field but ``identifier`` overrides the recorded setting."""

    identifier: str = Field(max_length=MAX_IDENTIFIER)
    account: str | None = Field(None, pattern=r"^\d{12}$")
    region: str | None = Field(None, pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    instance_class: str | None = None
    subnet_group: str | None = None
    security_groups: list[str] | None = None
    parameter_group: str | None = None
    instance_parameter_group: str | None = None
    option_group: str | None = None
    port: int | None = Field(None, ge=1150, le=65535)
    storage_type: str | None = None
    iops: int | None = Field(None, ge=1000)
    multi_az: bool | None = None
    iam_auth: bool | None = None
    availability_zone: str | None = None
    kms_key_arn: str | None = None
    publicly_accessible: bool | None = None
    engine: str | None = None
    tags: dict[str, str] | None = None

    @field_validator("identifier")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not IDENTIFIER.match(value):
            raise ValueError("an RDS identifier starts with a letter and has only letters, digits and single "
                             "hyphens, not at the end")
        return value.lower()


class SnapshotRestoreInput(_Strict):
    """``{"restore": "snapshot", ...}``: a snapshot to a new (or replacing) DB instance or Aurora cluster."""

    restore: Literal["snapshot"]
    snapshot_arn: str
    target: SnapshotTarget
    mode: Literal["new", "replace"] = "new"
    keep_on_failure: bool = False

    @field_validator("snapshot_arn")
    @classmethod
    def _snapshot_arn(cls, value: str) -> str:
        parts = value.split(":", 6)
        if len(parts) != 7 or parts[2] != "rds" or parts[5] not in ("snapshot", "cluster-snapshot"):
            raise ValueError("must be arn:aws:rds:<region>:<account>:snapshot:<id> or ...:cluster-snapshot:<id>")
        return value


def parse_input(event: dict[str, Any]) -> SnapshotRestoreInput:
    """The execution input, or ``RestoreInputInvalid`` naming every bad field."""
    try:
        return SnapshotRestoreInput.model_validate(event)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in error['loc']) or 'input'}: {error['msg']}"
                             for error in exc.errors())
        raise RestoreInputInvalid(f"the restore input is not valid: {problems} (see docs/restore.md)") from exc


class Place(_Lenient):
    account: str
    region: str
    role_arn: str | None = None


class PlannedInstance(_Lenient):
    """A DB instance to create: the whole restore (kind instance) or a member of the restored cluster."""

    identifier: str
    parameters: dict[str, Any]
    writer: bool = False
    recorded_identifier: str | None = None


class Renamed(_Lenient):
    """An existing resource renamed aside in mode "replace" (and renamed back after a failure)."""

    kind: Kind
    original: str
    renamed: str


class SnapshotCopy(_Lenient):
    """The snapshot copied into the target's account/region first (shared first when the account differs);
    the copy is deleted (and the share withdrawn) once the restore is done, or by the cleanup."""

    source_arn: str
    source_id: str
    source_account: str
    source_region: str
    source_role_arn: str
    copy_id: str
    kms_key_id: str | None = None
    shared: bool = False


class Plan(_Lenient):
    """What ``plan_restore`` decided; every later step reads only this (and its own previous result)."""

    restore_id: str
    kind: Kind
    mode: Literal["new", "replace"]
    keep_on_failure: bool
    snapshot_arn: str
    snapshot_id: str
    source: dict[str, Any] = Field(default_factory=dict)
    target: Place
    target_identifier: str
    # the cluster's RestoreDBClusterFromSnapshot / the instance's RestoreDBInstanceFromDBSnapshot parameters
    restore_parameters: dict[str, Any]
    # kind cluster: the writer first, then the readers
    instances: list[PlannedInstance] = Field(default_factory=list)
    renames: list[Renamed] = Field(default_factory=list)
    copy_across: SnapshotCopy | None = None
    settings_from_metadata: list[str] = Field(default_factory=list)
    settings_from_input: list[str] = Field(default_factory=list)
    metadata_verified: bool = False
    wait: WaitSettings = Field(default_factory=WaitSettings)
    started_at: str | None = None

    @property
    def writer(self) -> PlannedInstance | None:
        return next((i for i in self.instances if i.writer), None)

    @property
    def readers(self) -> list[PlannedInstance]:
        return [i for i in self.instances if not i.writer]


class StepState(PollState):
    """``$.step``: the stage the last action reached, with the wait loop's poll state."""

    stage: str = ""
    ready: bool = False


class StepInput(_Lenient):
    plan: Plan
    step: StepState | None = None


class CleanupState(PollState):
    """``$.cleanup``: what the cleanup loop did so far (entries are "<kind> <identifier>")."""

    done: bool = False
    deleted: list[str] = Field(default_factory=list)
    deleting: list[str] = Field(default_factory=list)
    pending: list[str] = Field(default_factory=list)
    renamed_back: list[str] = Field(default_factory=list)
    left_for_sweeper: list[str] = Field(default_factory=list)
    kept: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


class CleanupInput(_Lenient):
    plan: Plan | None = None
    cleanup: CleanupState | None = None
