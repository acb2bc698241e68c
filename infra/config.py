"""The backup policy config: parsed and validated at synth, so a bad config never deploys.

The config lives in `cdk.json` context under `rdsbackup`, or in a JSON file that the context key
`rdsbackup:config_file` names. Every error names the policy and the field.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from croniter.croniter import CroniterError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ACCOUNT_PATTERN = r"^\d{12}$"
REGION_PATTERN = r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d$"
POLICY_NAME_PATTERN = r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$"
# One schedule per policy (EventBridge Scheduler allows 1,000,000 per account); the policies ship with the
# Lambda code, so their size is bounded by the code package (250 MB), not by a parameter store.
MAX_POLICIES = 500


class ConfigError(ValueError):
    """The config is invalid; the message names the policy and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_CRON_FIELD_COUNT = 6
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*?/,#L\-]+$")


def _validate_schedule_expression(expression: str) -> str:
    if match := re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)", expression):
        value, unit = int(match.group(1)), match.group(2)
        if value < 1 or (value == 1) != (not unit.endswith("s")):
            raise ValueError(f"invalid rate expression {expression!r}: use e.g. 'rate(1 day)', 'rate(12 hours)'")
        return expression
    match = re.fullmatch(r"cron\((.*)\)", expression)
    if not match:
        raise ValueError(f"{expression!r} is neither cron(...) nor rate(...)")
    fields = match.group(1).split()
    if len(fields) != _CRON_FIELD_COUNT:
        raise ValueError(
            f"cron expression {expression!r} has {len(fields)} fields; EventBridge needs 6: "
            "minutes hours day-of-month month day-of-week year, e.g. cron(0 3 * * ? *)"
        )
    if not all(_CRON_FIELD.match(field) for field in fields):
        raise ValueError(f"cron expression {expression!r} has characters EventBridge does not accept")
    minutes, hours, day_of_month, _month, day_of_week, _year = fields
    if (day_of_month == "?") == (day_of_week == "?"):
        raise ValueError(
            f"cron expression {expression!r}: exactly one of day-of-month and day-of-week must be '?'"
        )
    for name, value, upper in (("minutes", minutes, 59), ("hours", hours, 23)):
        for number in re.findall(r"\d+", value):
            if int(number) > upper:
                raise ValueError(f"cron expression {expression!r}: {name} value {number} is out of range")
    return expression


def schedule_interval_seconds(expression: str) -> int:
    """The longest gap between two runs of a schedule (over a year of a cron expression's runs)."""
    if match := re.fullmatch(r"rate\((\d+) (minute|hour|day)s?\)", expression):
        return int(match.group(1)) * {"minute": 60, "hour": 3600, "day": 86400}[match.group(2)]
    minutes, hours, day_of_month, month, day_of_week, _year = expression[5:-1].split()
    # EventBridge numbers weekdays 1-7 from Sunday, croniter 0-6: shift every number not after '#'
    day_of_week = re.sub(r"(?<!#)\d+", lambda m: str(int(m.group(0)) - 1), day_of_week)
    runs = croniter(" ".join((minutes, hours, day_of_month, month, day_of_week)), datetime(2025, 1, 1))
    previous, longest = runs.get_next(datetime), 0.0
    end = previous + timedelta(days=366)
    for _ in range(10_000):  # a year of daily runs, a week of minutely ones: enough to see the pattern
        current = runs.get_next(datetime)
        longest = max(longest, (current - previous).total_seconds())
        if current > end:
            break
        previous = current
    return round(longest)


class Schedule(_Strict):
    """When EventBridge Scheduler starts the policy."""

    expression: str = Field(description="cron(min hour dom month dow year) or rate(N unit)")
    timezone: str = "UTC"
    enabled: bool = True

    @field_validator("expression")
    @classmethod
    def _expression(cls, value: str) -> str:
        return _validate_schedule_expression(value.strip())

    @model_validator(mode="after")
    def _understood(self) -> Schedule:
        try:
            schedule_interval_seconds(self.expression)
        except (ValueError, KeyError, CroniterError) as exc:
            raise ValueError(f"cron expression {self.expression!r} cannot be evaluated: {exc}") from exc
        return self

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name like 'Europe/Berlin')") from exc
        return value


class Selection(_Strict):
    """Which databases a policy backs up: explicit ids/ARNs and/or tags, in these accounts and regions."""

    resources: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)
    accounts: list[Annotated[str, Field(pattern=ACCOUNT_PATTERN)]] = Field(default_factory=list)
    regions: list[Annotated[str, Field(pattern=REGION_PATTERN)]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _something_selected(self) -> Selection:
        if not self.resources and not self.tags:
            raise ValueError("select at least one database: give 'resources' and/or 'tags'")
        for resource in self.resources:
            if not re.fullmatch(r"arn:aws[a-z-]*:rds:[a-z0-9-]+:\d{12}:(db|cluster):[a-zA-Z][a-zA-Z0-9-]*", resource) \
                    and not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9-]{0,62}", resource):
                raise ValueError(f"resource {resource!r} is neither an RDS DB/cluster ARN nor an identifier")
        return self


class Replication(_Strict):
    """Where snapshot replicas go: another region and/or another account."""

    region: Annotated[str, Field(pattern=REGION_PATTERN)] | None = None
    account: Annotated[str, Field(pattern=ACCOUNT_PATTERN)] | None = None
    kms_key_arn: Annotated[str, Field(pattern=r"^arn:aws[a-z-]*:kms:")] | None = None
    retention: Annotated[int, Field(ge=1, le=1000)] | None = None

    @model_validator(mode="after")
    def _has_target(self) -> Replication:
        if self.region is None and self.account is None:
            raise ValueError("give a target 'region' and/or 'account'")
        return self


class WorkerEgress(_Strict):
    """Where the worker's HTTPS (S3, KMS, Secrets Manager, CloudWatch Logs, ECR) may go, besides the DB:
    the VPC's gateway endpoints by prefix list (`pl-...`, e.g. S3's) and its interface endpoints by
    their security groups (`sg-...`). Without either, TCP 443 to anywhere (the task may need a NAT)."""

    prefix_lists: list[Annotated[str, Field(pattern=r"^pl-[0-9a-f]+$")]] = Field(default_factory=list)
    security_groups: list[Annotated[str, Field(pattern=r"^sg-[0-9a-f]+$")]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _something(self) -> WorkerEgress:
        if not self.prefix_lists and not self.security_groups:
            raise ValueError("'egress' needs 'prefix_lists' and/or 'security_groups' (leave it out for TCP 443 "
                             "to anywhere)")
        return self


class WorkerSettings(_Strict):
    """The temporary worker that runs an image-level backup."""

    launch_type: Literal["FARGATE", "EC2"] = "FARGATE"
    subnets: list[Annotated[str, Field(pattern=r"^subnet-[0-9a-f]+$")]] = Field(default_factory=list)
    cpu: Literal[256, 512, 1024, 2048, 4096] = 1024
    memory: Annotated[int, Field(ge=512, le=30720)] = 2048
    timeout_minutes: Annotated[float, Field(gt=0, le=24 * 60)] = 240
    # EC2 launch type: the name of an EC2 (Auto Scaling group) capacity provider that rds-backup
    # associates with its worker cluster.
    capacity_provider: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,255}$")] | None = None
    # HTTPS only to these VPC endpoints (prefix lists, endpoint security groups); default: 443 anywhere
    egress: WorkerEgress | None = None

    @model_validator(mode="after")
    def _capacity_for_ec2(self) -> WorkerSettings:
        if self.launch_type == "EC2" and not self.capacity_provider:
            raise ValueError("launch_type EC2 needs 'capacity_provider': the EC2 capacity provider the worker "
                             "runs on")
        if self.launch_type == "FARGATE" and self.capacity_provider:
            raise ValueError("'capacity_provider' is only for launch_type EC2")
        return self


class BackupRetention(_Strict):
    keep_last: Annotated[int, Field(ge=1)] | None = 7
    keep_days: Annotated[int, Field(ge=1)] | None = None


class ImageBackup(_Strict):
    """Image-level backup of a policy's databases into a repository."""

    repository: str
    retention: BackupRetention = BackupRetention()
    worker: WorkerSettings = WorkerSettings()
    secret_arn: Annotated[str, Field(pattern=r"^arn:aws[a-z-]*:secretsmanager:")] | None = None


class Gfs(_Strict):
    """GFS selection of archived points: the newest point of each of the last N weeks/months/years is
    kept past `retention_days` (rdsbackup.repository.gfs)."""

    weekly: Annotated[int, Field(ge=1)] | None = None
    monthly: Annotated[int, Field(ge=1)] | None = None
    yearly: Annotated[int, Field(ge=1)] | None = None


class Archive(_Strict):
    """Restore points older than `after_days` are copied into an archive repository (self-contained
    fulls) by the policy's backup-account session; archived points older than `retention_days` are
    deleted there (except the GFS selection and those under Object Lock)."""

    repository: str
    after_days: Annotated[int, Field(ge=0)]
    retention_days: Annotated[int, Field(ge=1)] | None = None
    gfs: Gfs | None = None
    # how long a database-level restore from the archive waits for S3 to retrieve its packs (Deep
    # Archive's Bulk tier takes up to 48 hours)
    retrieval_timeout_hours: Annotated[float, Field(gt=0, le=24 * 30)] = 48

    @model_validator(mode="after")
    def _effective(self) -> Archive:
        if self.gfs is not None and self.retention_days is None:
            raise ValueError("'gfs' has no effect without 'retention_days' (nothing is deleted, so every archived "
                             "point is kept anyway)")
        if self.retention_days is not None and self.retention_days <= self.after_days:
            raise ValueError(f"'retention_days' ({self.retention_days}) must exceed 'after_days' "
                             f"({self.after_days}): archived points would be deleted as soon as they are archived")
        return self


class MaintenanceWorker(_Strict):
    """The backup-account session's worker (Fargate, in the control account and region)."""

    cpu: Literal[256, 512, 1024, 2048, 4096] = 1024
    memory: Annotated[int, Field(ge=512, le=30720)] = 2048
    timeout_minutes: Annotated[float, Field(gt=0, le=24 * 60)] = 12 * 60


class Maintenance(_Strict):
    """The backup-account session of a policy with image-level backup: archive (when `archive` is set),
    backup retention (forget, prune), archive retention. Its own schedule, daily by default."""

    schedule: Schedule = Field(default_factory=lambda: Schedule(expression="cron(0 6 * * ? *)"))
    worker: MaintenanceWorker = MaintenanceWorker()


# "archived_restore_point" only when asked for: its packs are retrieved from Glacier first (hours, per GB)
RestoreTestTarget = Literal["snapshot", "replica", "restore_point", "archived_restore_point"]
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(m|h|d)$")
_DURATION_SECONDS = {"m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """Seconds in '90m', '36h' or '2d'."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration: use minutes, hours or days, e.g. '90m', '36h', '2d'")
    return round(float(match.group(1)) * _DURATION_SECONDS[match.group(2)])


class RestoreTestWorker(WorkerSettings):
    """The test worker of a snapshot-only policy: where it runs (as `image_backup.worker`), the DB
    credentials, and the repository whose bucket receives its result documents (only its results
    prefix; nothing is written into the repository)."""

    results_repository: str
    secret_arn: Annotated[str, Field(pattern=r"^arn:aws[a-z-]*:secretsmanager:")] | None = None


class RestoreTest(_Strict):
    """Scheduled proof that what a policy keeps restores and holds its data (README, "Restore tests and RPO
    monitoring")."""

    schedule: Schedule = Schedule(expression="cron(0 5 ? * SUN *)")
    # None tests every selected source per run; N tests the N least recently tested (a rotation).
    sample: Annotated[int, Field(ge=1, le=100)] | None = None
    # what to restore: the newest snapshot, replica, restore point, archived restore point
    targets: list[RestoreTestTarget] | None = None
    # archived_restore_point: the S3 retrieval tier of its packs (Bulk: the cheapest; hours, not minutes)
    retrieval_tier: Literal["Bulk", "Standard", "Expedited"] = "Bulk"
    # None: the smallest sensible class for the engine (db.t4g.micro, Aurora db.t4g.medium, ...)
    instance_class: Annotated[str, Field(pattern=r"^db\.[a-z0-9]+\.[a-z0-9]+$")] | None = None
    timeout_minutes: Annotated[int, Field(ge=10, le=24 * 60)] = 180
    # the test worker of a policy without image_backup (with it, image_backup's worker tests)
    worker: RestoreTestWorker | None = None

    @field_validator("targets")
    @classmethod
    def _targets(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or len(set(value)) != len(value)):
            raise ValueError("give at least one of snapshot, replica, restore_point, archived_restore_point, each once")
        return value


class Policy(_Strict):
    """One backup policy."""

    name: Annotated[str, Field(pattern=POLICY_NAME_PATTERN)]
    schedule: Schedule
    selection: Selection
    snapshot_retention: Annotated[int, Field(ge=1, le=1000)]
    # resources backed up at once: each runs in its own execution under a Distributed Map (up to 10,000
    # at once); the shared slots (snapshot creations, copies) bound the work RDS sees
    concurrency: Annotated[int, Field(ge=1, le=1000)] = 4
    # the most resources one session of the policy backs up (the session's timeout is derived from it)
    max_resources: Annotated[int, Field(ge=1, le=10000)] = 1000
    replication: Replication | None = None
    image_backup: ImageBackup | None = None
    archive: Archive | None = None
    maintenance: Maintenance | None = None
    # how old the newest successful backup of a source may be; default 1.5 x the schedule's interval
    rpo: str | None = None
    restore_test: RestoreTest | None = None
    # retention never deletes a snapshot, replica or restore point younger than this; default: the time
    # the schedule takes to make snapshot_retention snapshots (image_backup.retention.keep_last restore
    # points), so that a burst of sessions cannot flush history
    retention_min_days: Annotated[float, Field(ge=0)] | None = None

    @field_validator("rpo")
    @classmethod
    def _rpo(cls, value: str | None) -> str | None:
        if value is not None and parse_duration(value) < 60:
            raise ValueError(f"rpo {value!r} is shorter than a minute")
        return value

    @property
    def rpo_seconds(self) -> int:
        """The RPO in seconds: as configured, or 1.5 x the longest gap between two scheduled runs."""
        if self.rpo is not None:
            return parse_duration(self.rpo)
        return round(1.5 * schedule_interval_seconds(self.schedule.expression))

    @property
    def retention_min_age_seconds(self) -> int:
        """The minimum age of a snapshot retention may delete: as configured, or keep_last scheduled runs."""
        if self.retention_min_days is not None:
            return round(self.retention_min_days * 86400)
        return self.snapshot_retention * schedule_interval_seconds(self.schedule.expression)

    @property
    def restore_point_min_age_seconds(self) -> int:
        """The minimum age of a restore point the backup-account session may forget: as configured
        (retention_min_days), or the time the schedule takes to make image_backup.retention.keep_last
        restore points (the snapshots' derivation); 0 without image backups or keep_last."""
        if self.retention_min_days is not None:
            return round(self.retention_min_days * 86400)
        if self.image_backup is None or not self.image_backup.retention.keep_last:
            return 0
        return self.image_backup.retention.keep_last * schedule_interval_seconds(self.schedule.expression)

    @property
    def restore_test_targets(self) -> list[str]:
        """What a restore test restores: as configured, or the newest snapshot (and restore point)."""
        if self.restore_test is None:
            return []
        if self.restore_test.targets is not None:
            return list(self.restore_test.targets)
        return ["snapshot"] + (["restore_point"] if self.image_backup is not None else [])

    @model_validator(mode="after")
    def _needs_image_backup(self) -> Policy:
        for name in ("archive", "maintenance"):
            if getattr(self, name) is not None and self.image_backup is None:
                raise ValueError(f"'{name}' has no effect without 'image_backup' (it works on the restore points "
                                 "image-level backups make)")
        return self


BACKUP_STORAGE_CLASSES = ("STANDARD", "STANDARD_IA", "INTELLIGENT_TIERING")
ARCHIVE_STORAGE_CLASSES = ("GLACIER", "DEEP_ARCHIVE", "GLACIER_IR", "STANDARD_IA", "STANDARD")


class Repository(_Strict):
    """A repository (an S3 bucket the control stack creates): a backup repository that policies'
    `image_backup` names, or an archive repository that their `archive` names.

    `storage_class` is where packs go (index, manifests and keys stay STANDARD); `object_lock_days` turns
    on versioning and Object Lock with that default retention in `object_lock_mode` (COMPLIANCE by default
    for archive repositories, GOVERNANCE for backup repositories, whose prune must delete)."""

    storage_class: Literal["STANDARD", "STANDARD_IA", "INTELLIGENT_TIERING", "GLACIER", "DEEP_ARCHIVE",
                           "GLACIER_IR"] = "STANDARD"
    object_lock_days: Annotated[int, Field(ge=1)] | None = None
    object_lock_mode: Literal["COMPLIANCE", "GOVERNANCE"] | None = None

    @model_validator(mode="after")
    def _lock_mode_needs_days(self) -> Repository:
        if self.object_lock_mode is not None and self.object_lock_days is None:
            raise ValueError("'object_lock_mode' has no effect without 'object_lock_days'")
        return self


class MaintenanceNetwork(_Strict):
    """Where the backup-account session's worker runs (control account and region). Default: the default
    VPC's subnets with its default security group and a public IP (to reach S3, KMS, ECR and CloudWatch
    Logs without a NAT gateway). Private subnets need a NAT gateway or VPC endpoints for those."""

    subnets: list[Annotated[str, Field(pattern=r"^subnet-[0-9a-f]+$")]] = Field(default_factory=list)
    security_groups: list[Annotated[str, Field(pattern=r"^sg-[0-9a-f]+$")]] = Field(default_factory=list)
    assign_public_ip: bool | None = None

    @model_validator(mode="after")
    def _effective(self) -> MaintenanceNetwork:
        if (self.security_groups or self.assign_public_ip is not None) and not self.subnets:
            raise ValueError("'security_groups' and 'assign_public_ip' apply to the 'subnets' given; without "
                             "subnets the default VPC's are used with its default group and a public IP")
        return self


class Timing(_Strict):
    """How long to wait and how often to retry. Defaults suit AWS; tests shrink them."""

    retry_interval_seconds: Annotated[int, Field(ge=1)] = 30
    retry_max_attempts: Annotated[int, Field(ge=0, le=20)] = 6
    retry_backoff_rate: Annotated[float, Field(ge=1.0)] = 2.0
    not_available_max_attempts: Annotated[int, Field(ge=0, le=20)] = 8
    wait_initial_seconds: Annotated[int, Field(ge=0)] = 30
    wait_max_seconds: Annotated[int, Field(ge=0)] = 300
    wait_factor: Annotated[float, Field(ge=1.0)] = 1.5
    wait_timeout_seconds: Annotated[int, Field(ge=1)] = 4 * 3600
    # how long a resource waits for a free snapshot slot of its account-region before it fails
    slot_wait_timeout_seconds: Annotated[int, Field(ge=1)] = 4 * 3600
    lease_seconds: Annotated[int, Field(ge=60)] = 6 * 3600
    sg_delete_attempts: Annotated[int, Field(ge=1, le=60)] = 12
    sg_delete_interval_seconds: Annotated[float, Field(ge=0)] = 5.0
    sweep_after_minutes: Annotated[int, Field(ge=1)] = 6 * 60


class PlaceLimits(_Strict):
    """Raised AWS limits of one account-region (after a quota increase)."""

    account: Annotated[str, Field(pattern=ACCOUNT_PATTERN)]
    region: Annotated[str, Field(pattern=REGION_PATTERN)]
    snapshot_creations: Annotated[int, Field(ge=1, le=100000)] | None = None
    snapshot_copies: Annotated[int, Field(ge=1, le=1000)] | None = None


class Limits(_Strict):
    """Work in progress that every session and policy shares, per account-region (copies: per destination
    account-region). Defaults are AWS's: the manual-snapshot quota (100) and 20 copies in progress."""

    snapshot_creations: Annotated[int, Field(ge=1, le=100000)] = 100
    snapshot_copies: Annotated[int, Field(ge=1, le=1000)] = 20
    places: list[PlaceLimits] = Field(default_factory=list)

    def as_runtime(self) -> dict:
        """The ``SLOT_LIMITS`` document of the handlers (``rdsbackup_lambdas.slots``)."""
        places = {}
        for place in self.places:
            limits = {"snapshot": place.snapshot_creations, "copy": place.snapshot_copies}
            places[f"{place.account}/{place.region}"] = {k: v for k, v in limits.items() if v is not None}
        return {"defaults": {"snapshot": self.snapshot_creations, "copy": self.snapshot_copies}, "places": places}


class Target(_Strict):
    account: Annotated[str, Field(pattern=ACCOUNT_PATTERN)] | None = None
    region: Annotated[str, Field(pattern=REGION_PATTERN)] | None = None


class Control(Target):
    """Where the control plane lives. `organization_id`: roles in other accounts also require the caller
    to be in this AWS Organization (aws:PrincipalOrgID)."""

    organization_id: Annotated[str, Field(pattern=r"^o-[a-z0-9]{10,32}$")] | None = None


class Deployment(_Strict):
    """This deployment's names. Every stack and physically named resource (roles, keys' aliases, buckets,
    clusters, task families, schedules, alarms, the dashboard) starts with `name_prefix`, so several control
    deployments (e.g. a staging one beside production) coexist in the same accounts when their prefixes
    differ. Changing it on a deployed app replaces every named resource. Short, so that the longest role
    name (`<prefix>-step-create-cluster-instances-<region>`) stays within IAM's 64 characters."""

    name_prefix: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,10}[a-z0-9]$")] = "rdsbackup"

    @field_validator("name_prefix")
    @classmethod
    def _valid_in_rds_identifiers(cls, prefix: str) -> str:
        # restore tests name their throwaway databases <prefix>-test-<hash>; RDS refuses "--" in an identifier
        if "--" in prefix:
            raise ValueError(f"{prefix!r} has two hyphens in a row, which RDS refuses in the restore-test "
                             "throwaways' identifiers (<prefix>-test-<hash>)")
        return prefix


class BackupConfig(_Strict):
    """The whole config: where the control plane lives and the policies it runs."""

    control: Control = Control()
    deployment: Deployment = Deployment()
    notification_emails: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]] = Field(
        default_factory=list
    )
    repositories: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,30}$")], Repository] = Field(
        default_factory=dict
    )
    timing: Timing = Timing()
    maintenance_network: MaintenanceNetwork = MaintenanceNetwork()
    limits: Limits = Limits()
    # The only role (besides CloudFormation's deployment role) that may change the repositories' bucket
    # policies, lifecycle, versioning and object lock, or disable/delete their key (docs/security.md).
    break_glass_role_arn: Annotated[str, Field(pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$")] | None = None
    policies: Annotated[list[Policy], Field(min_length=1, max_length=MAX_POLICIES)]

    @model_validator(mode="after")
    def _consistent(self) -> BackupConfig:
        names = [policy.name for policy in self.policies]
        if duplicate := next((name for name in names if names.count(name) > 1), None):
            raise ValueError(f"policy name {duplicate!r} is used twice")
        return self


def _location(loc: tuple[Any, ...], raw: dict[str, Any]) -> str:
    """'policy "demo": field "schedule.expression"' from a pydantic error location."""
    parts = list(loc)
    if len(parts) >= 2 and parts[0] == "policies" and isinstance(parts[1], int):
        policies = raw.get("policies") or []
        index = parts[1]
        name = policies[index].get("name") if index < len(policies) and isinstance(policies[index], dict) else None
        label = f'policy "{name}"' if name else f"policy #{index + 1}"
        field = ".".join(str(part) for part in parts[2:])
        return f'{label}: field "{field}"' if field else label
    return f'field "{".".join(str(part) for part in parts)}"' if parts else "config"


_RESTORE_TEST_NEEDS = {"replica": "replication", "restore_point": "image_backup", "archived_restore_point": "archive"}


def _check_rpo_and_restore_test(policy: Policy) -> None:
    where = f'policy "{policy.name}"'
    interval = schedule_interval_seconds(policy.schedule.expression)
    if policy.rpo is not None and policy.rpo_seconds < interval:
        raise ConfigError(
            f'{where}: field "rpo": {policy.rpo!r} is shorter than the time between two scheduled backups '
            f"({interval / 3600:g} h): every source would be outside its RPO before its next backup"
        )
    for target in policy.restore_test_targets:
        needs = _RESTORE_TEST_NEEDS.get(target)
        if needs and getattr(policy, needs) is None:
            raise ConfigError(f'{where}: field "restore_test.targets": {target!r} needs the policy\'s '
                              f'"{needs}" section, which it does not have')
    test = policy.restore_test
    if test is not None and policy.image_backup is None and test.worker is None:
        raise ConfigError(f'{where}: field "restore_test.worker": a policy without "image_backup" needs a test '
                          'worker: give "restore_test": {"worker": {"results_repository": "<repository>"}} (the '
                          "bucket its result documents go to; worker settings as in image_backup.worker)")
    if test is not None and policy.image_backup is not None and test.worker is not None:
        raise ConfigError(f'{where}: field "restore_test.worker": the policy\'s restore tests run on its '
                          '"image_backup.worker"; remove "restore_test.worker"')


def _check_archived_restore_test(policy: Policy, config: BackupConfig, where: str) -> None:
    """A restore test of archived points retrieves them in a tier the archive's class offers (S3 refuses
    Expedited for DEEP_ARCHIVE only when the test runs, weeks after the deploy)."""
    if "archived_restore_point" not in policy.restore_test_targets or policy.archive is None:
        return
    assert policy.restore_test is not None
    tier = policy.restore_test.retrieval_tier
    storage_class = config.repositories[policy.archive.repository].storage_class
    if storage_class == "DEEP_ARCHIVE" and tier == "Expedited":
        raise ConfigError(f'{where}: field "restore_test.retrieval_tier": archive repository '
                          f'{policy.archive.repository!r} keeps its packs in DEEP_ARCHIVE, which offers the tiers '
                          "Standard and Bulk, not Expedited")


def _semantic_checks(config: BackupConfig, default_account: str, default_region: str) -> None:
    control_account = config.control.account or default_account
    control_region = config.control.region or default_region
    for policy in config.policies:
        where = f'policy "{policy.name}"'
        for section in (policy.image_backup, policy.archive):
            if section is not None and section.repository not in config.repositories:
                known = ", ".join(sorted(config.repositories)) or "none defined"
                kind = "image_backup" if section is policy.image_backup else "archive"
                raise ConfigError(
                    f'{where}: field "{kind}.repository": unknown repository {section.repository!r} '
                    f"(repositories: {known})"
                )
        _check_rpo_and_restore_test(policy)
        _check_archived_restore_test(policy, config, where)
        test_worker = policy.restore_test.worker if policy.restore_test is not None else None
        if test_worker is not None and test_worker.results_repository not in config.repositories:
            known = ", ".join(sorted(config.repositories)) or "none defined"
            raise ConfigError(f'{where}: field "restore_test.worker.results_repository": unknown repository '
                              f"{test_worker.results_repository!r} (repositories: {known})")
        if test_worker is not None and repository_roles(config).get(test_worker.results_repository) == "archive":
            raise ConfigError(f'{where}: field "restore_test.worker.results_repository": '
                              f"{test_worker.results_repository!r} is an archive repository (Object Lock would keep "
                              "every result document); name a backup repository or one of its own")
        _check_repository_use(policy, config, where)
        _check_retention_reaches_archive(policy, where)
        replication = policy.replication
        if replication is None:
            continue
        accounts = policy.selection.accounts or [control_account]
        regions = policy.selection.regions or [control_region]
        if len(accounts) > 1 or (len(regions) > 1 and replication.region is None):
            raise ConfigError(
                f'{where}: field "replication": a replicating policy selects from one account, and from one '
                "region unless replication.region is set (split it into one policy per source account)"
            )
        for account in accounts:
            for region in regions:
                target = (replication.account or account, replication.region or region)
                if target == (account, region):
                    raise ConfigError(
                        f'{where}: field "replication": the target ({target[0]}, {target[1]}) is the source '
                        "itself; give another region and/or account"
                    )


def maintenance_of(policy: Policy) -> Maintenance | None:
    """The backup-account session settings of a policy: every policy with image-level backup has one."""
    if policy.image_backup is None:
        return None
    return policy.maintenance or Maintenance()


def object_lock_mode(name: str, settings: Repository, config: BackupConfig) -> str | None:
    """The Object Lock mode a repository's bucket gets (None: no Object Lock)."""
    if settings.object_lock_days is None:
        return None
    if settings.object_lock_mode:
        return settings.object_lock_mode
    return "COMPLIANCE" if repository_roles(config).get(name) == "archive" else "GOVERNANCE"


def repository_roles(config: BackupConfig) -> dict[str, str]:
    """Each named repository's role: "backup" (some image_backup names it) or "archive"."""
    roles = {}
    for policy in config.policies:
        if policy.image_backup is not None:
            roles.setdefault(policy.image_backup.repository, "backup")
        if policy.archive is not None:
            roles.setdefault(policy.archive.repository, "archive")
    return roles


def _check_repository_use(policy: Policy, config: BackupConfig, where: str) -> None:
    """Storage classes and roles that would not work, or settings that would do nothing."""
    if policy.image_backup is not None:
        name = policy.image_backup.repository
        settings = config.repositories[name]
        if settings.storage_class not in BACKUP_STORAGE_CLASSES:
            raise ConfigError(
                f'field "repositories.{name}.storage_class": {settings.storage_class} is for archive repositories: '
                f'policy "{policy.name}" backs up into it, and backups and restores must read its packs at once '
                f"(use one of {', '.join(BACKUP_STORAGE_CLASSES)})")
        for other in config.policies:
            if other.archive is not None and other.archive.repository == name:
                raise ConfigError(
                    f'{where}: field "image_backup.repository": repository {name!r} is also policy '
                    f'"{other.name}"\'s archive repository; archive into a repository of its own')
    if policy.archive is not None:
        name = policy.archive.repository
        settings = config.repositories[name]
        if settings.storage_class not in ARCHIVE_STORAGE_CLASSES:
            raise ConfigError(
                f'field "repositories.{name}.storage_class": {settings.storage_class} is not an archive class '
                f"(use one of {', '.join(ARCHIVE_STORAGE_CLASSES)})")


def _check_retention_reaches_archive(policy: Policy, where: str) -> None:
    """Refuse an image_backup.retention that forgets every restore point before archive.after_days.

    A point stops being kept by `keep_last` N once N newer points exist: at the latest N longest gaps of
    the backup schedule after it was taken (when every scheduled backup runs), and by `keep_days` after
    those days; `forget` runs in the backup-account session, at the latest one longest gap of its
    schedule later. If that is still before `after_days`, retention would remove every point before it
    is due for the archive. The run-time guard keeps such points until they are archived anyway, so the
    retention would be accepted and never applied as written: refused, naming the fields. (Backups
    that fail keep points longer; that case is left to the run-time guard.)"""
    if policy.archive is None or policy.image_backup is None or policy.archive.after_days == 0:
        return
    retention = policy.image_backup.retention
    if retention.keep_last is None and retention.keep_days is None:
        return  # nothing is ever forgotten
    backup_gap = schedule_interval_seconds(policy.schedule.expression)
    kept = max((retention.keep_days or 0) * 86400, (retention.keep_last or 0) * backup_gap)
    maintenance = policy.maintenance or Maintenance()
    forgotten_by = kept + schedule_interval_seconds(maintenance.schedule.expression)
    if forgotten_by < policy.archive.after_days * 86400:
        rules = " and ".join(f"{name} {value}" for name, value in (("keep_last", retention.keep_last),
                                                                    ("keep_days", retention.keep_days))
                             if value is not None)
        raise ConfigError(
            f'{where}: field "image_backup.retention" ({rules}) forgets every restore point within '
            f"{forgotten_by / 86400:g} days (backups every {backup_gap / 3600:g} h, the backup-account session "
            f"every {(forgotten_by - kept) / 3600:g} h), before field \"archive.after_days\" "
            f"({policy.archive.after_days}) makes it due for the archive. Retention never removes a point "
            "that is not archived yet, so every point would stay for after_days, not as this retention says: "
            f"keep points at least that long (e.g. keep_days {policy.archive.after_days}) or "
            f"archive sooner (after_days {math.floor(forgotten_by / 86400)} or less)")


def parse_config(raw: Any, *, default_account: str, default_region: str) -> BackupConfig:
    """Validate a raw config; raise ConfigError naming the policy and field of the first problem."""
    if not isinstance(raw, dict):
        raise ConfigError("the rdsbackup config must be a JSON object with a 'policies' list")
    try:
        config = BackupConfig.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown field (check the spelling; see the README's config reference)"
            problems.append(f"{_location(error['loc'], raw)}: {message}")
        raise ConfigError("invalid rdsbackup config: " + "; ".join(problems)) from None
    _semantic_checks(config, default_account, default_region)
    return config


def load_config(context: dict[str, Any] | None, *, base_dir: Path, default_account: str,
                default_region: str) -> BackupConfig:
    """Load the config from CDK context: inline under `rdsbackup` or a file named by `rdsbackup:config_file`."""
    context = context or {}
    config_file = context.get("rdsbackup:config_file")
    if config_file:
        path = (base_dir / config_file).resolve()
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} (from context rdsbackup:config_file) does not exist") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None
    else:
        raw = context.get("rdsbackup")
        if raw is None:
            raise ConfigError("no rdsbackup config: add a 'rdsbackup' object to cdk.json's context "
                              "or name a file with 'rdsbackup:config_file'")
        if isinstance(raw, str):  # `cdk -c rdsbackup='{...}'` passes a string
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"context rdsbackup is not valid JSON: {exc}") from None
    return parse_config(raw, default_account=default_account, default_region=default_region)
