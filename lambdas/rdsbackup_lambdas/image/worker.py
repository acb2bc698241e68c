"""The image-level backup's main steps: prepare the network and credentials, start the worker, check it.

Every call goes to the resource's account and region through its access role (the lease table and the
result documents excepted: they are in the control account).
"""

from __future__ import annotations

import time
from typing import Any

from botocore.exceptions import ClientError

from rdsbackup_lambdas import aws_errors, aws_sessions, powers
from rdsbackup_lambdas.config import ImageConfig
from rdsbackup_lambdas.errors import (
    ConfigurationError,
    DBNotAvailable,
    SecurityGroupError,
    SqlServerBackupOptionMissing,
    WorkerFailed,
    WorkerTimedOut,
)
from rdsbackup_lambdas.image import database, names, security_groups, temp_bucket, worker_tasks
from rdsbackup_lambdas.models import ImageBackup, ImageState, Item, WaitSettings
from rdsbackup_lambdas.observability import MetricUnit, logger, metrics
from rdsbackup_lambdas.polling import next_poll

SQLSERVER_OPTION = "SQLSERVER_BACKUP_RESTORE"
IAM_ROLE_SETTING = "IAM_ROLE_ARN"
BUCKET_LEASE_MARGIN_SECONDS = 3600


def where(item: Item) -> str:
    return f"account {item.resource.account} region {item.resource.region}"


def client(item: Item, service: str) -> Any:
    """A client in the resource's account and region, through the worker-launch role."""
    return aws_sessions.client(service, item.resource.region, powers.role_for(item.access_role_arn, powers.LAUNCH),
                               item.session_id)


def require_settings(item: Item) -> ImageBackup:
    if item.image_backup is None:
        raise ConfigurationError(
            f"ITEM for {item.resource.arn} has no image_backup: the state machine runs the image-level steps only "
            "for policies that configure it"
        )
    return item.image_backup


def require_image(item: Item, *, task: bool = False) -> ImageState:
    if item.image is None or (task and not item.image.task_arn):
        needed = "start_worker" if task else "prepare_worker"
        raise ConfigurationError(f"ITEM for {item.resource.arn} has no image{'.task_arn' if task else ''} "
                                 f"({needed} must run first)")
    return item.image


def group_names(item: Item) -> tuple[str, str]:
    """(DB group name, worker group name) of the session for this resource."""
    res = item.resource
    return (names.security_group_name("db", item.session_id, res.arn, res.id),
            names.security_group_name("worker", item.session_id, res.arn, res.id))


def sqlserver_option_role(rds: Any, db: database.Database, what: str) -> str:
    """The IAM role of the option group's ``SQLSERVER_BACKUP_RESTORE`` option (RDS writes the .bak with it)."""
    fix = (f"add the {SQLSERVER_OPTION} option with an IAM role (setting {IAM_ROLE_SETTING}: a role RDS may assume "
           "that can write to S3) to option group {group}; a default option group cannot be changed: create an "
           "option group for the engine, add the option, and modify the DB to use it")
    if not db.option_group:
        raise SqlServerBackupOptionMissing(f"{what} has no option group: " + fix.format(group="<new group>"))
    try:
        groups = rds.describe_option_groups(OptionGroupName=db.option_group)["OptionGroupsList"]
    except ClientError as exc:
        if aws_errors.error_code(exc) not in ("OptionGroupNotFoundFault", "OptionGroupNotFound"):
            aws_errors.raise_translated(exc, f"describe option group {db.option_group!r} of {what}")
            raise
        groups = []  # a default group is not always describable: it has no option either way
    options = groups[0].get("Options", []) if groups else []
    option = next((o for o in options if o.get("OptionName") == SQLSERVER_OPTION), None)
    if option is None:
        raise SqlServerBackupOptionMissing(
            f"{what}: option group {db.option_group!r} has no {SQLSERVER_OPTION} option, so RDS cannot write a "
            "native backup to S3; " + fix.format(group=repr(db.option_group)))
    role = next((s.get("Value") for s in option.get("OptionSettings") or []
                 if s.get("Name") == IAM_ROLE_SETTING and s.get("Value")), None)
    if not role:
        raise SqlServerBackupOptionMissing(
            f"{what}: the {SQLSERVER_OPTION} option of option group {db.option_group!r} has no {IAM_ROLE_SETTING}; "
            + fix.format(group=repr(db.option_group)))
    return role


def _check_subnets(ec2: Any, subnets: list[str], vpc_id: str, what: str) -> None:
    try:
        found = ec2.describe_subnets(SubnetIds=subnets)["Subnets"]
    except ClientError as exc:
        raise WorkerFailed(f"the worker subnets {subnets} of {what} cannot be used: {aws_errors.error_code(exc)}: "
                           f"{aws_errors.error_message(exc)}") from exc
    outside = [s["SubnetId"] for s in found if s.get("VpcId") != vpc_id]
    if outside:
        raise WorkerFailed(
            f"the worker subnets {outside} are not in the VPC of {what} ({vpc_id}); set image_backup.worker.subnets "
            "to subnets of that VPC (or leave it empty to use the DB subnet group's)")


def lease_temp_bucket(item: Item, config: ImageConfig, option_role: str, *, before_worker_seconds: int = 0
                      ) -> tuple[str, str]:
    """SQL Server: this operation's lease on the temporary bucket of the resource's place (made if missing)
    and the grant of its prefix to ``option_role`` (the option group's role: RDS writes and reads the
    ``.bak`` with it). Returns ``(bucket, prefix)``; ``cleanup_worker`` revokes, empties and releases.
    The lease outlives the worker's timeout (plus ``before_worker_seconds``: a restore test's restore)."""
    settings = require_settings(item)
    res = item.resource
    bucket = names.temp_bucket_name(res.account, res.region, config.temp_bucket_secret)
    prefix = names.temp_prefix(item.session_id, res.id)
    s3 = client(item, "s3")
    seconds = max(item.lease_seconds,
                  before_worker_seconds + settings.worker.timeout_seconds + BUCKET_LEASE_MARGIN_SECONDS)
    with temp_bucket.locked(config.table_name, bucket, config.lock_wait_seconds):
        temp_bucket.take_lease(config.table_name, bucket, item.session_id, res.id, seconds)
        if not temp_bucket.exists(s3, bucket, res.account):
            temp_bucket.create(s3, bucket, res.region, res.account)
        temp_bucket.grant(s3, bucket, res.account, prefix, option_role, item.session_id, res.id)
    logger.info("temporary bucket ready", extra={"bucket": bucket, "prefix": prefix})
    return bucket, prefix


def prepare_worker(item: Item, config: ImageConfig) -> dict[str, Any]:
    """Find the DB's endpoint, network and credentials secret; make the two groups; prepare SQL Server's bucket."""
    settings = require_settings(item)
    res = item.resource
    noun = "DB instance" if res.kind == "instance" else "DB cluster"
    what = f"{noun} {res.id!r} in {where(item)}"
    rds, ec2 = client(item, "rds"), client(item, "ec2")
    db = database.describe(rds, res.kind, res.id, where(item))
    engine = database.engine_family(db.engine)
    secret_arn = database.credentials_secret(db, settings.secret_arn, where(item))
    option_role = sqlserver_option_role(rds, db, f"SQL Server {what}") if engine == "sqlserver" else None
    subnets = list(settings.worker.subnets) or db.subnets
    if not subnets:
        raise SecurityGroupError(f"{what} has no subnets in its DB subnet group; set image_backup.worker.subnets")
    if settings.worker.subnets:
        _check_subnets(ec2, subnets, db.vpc_id, what)

    db_name, worker_name = group_names(item)
    pair = security_groups.ensure_pair(
        ec2, vpc_id=db.vpc_id, port=db.port, db_name=db_name, worker_name=worker_name,
        tags=names.temporary_tags(item.session_id, res.arn), what=what, egress=settings.worker.egress)
    added = database.add_group(rds, db, pair["db_security_group"], where(item))
    logger.info("temporary security groups ready", extra={**pair, "attached": added})

    bucket = prefix = None
    if engine == "sqlserver":
        assert option_role is not None
        bucket, prefix = lease_temp_bucket(item, config, option_role)

    return ImageState(
        phase="prepared", db_security_group=pair["db_security_group"],
        worker_security_group=pair["worker_security_group"], vpc_id=db.vpc_id, subnets=subnets,
        endpoint=db.endpoint, port=db.port, engine=engine, resource_id=db.resource_id, secret_arn=secret_arn,
        temp_bucket=bucket,
        temp_prefix=prefix,
    ).model_dump()


def start_worker(item: Item) -> dict[str, Any]:
    """Run the worker task, or find the one a previous try started."""
    settings = require_settings(item)
    image = require_image(item)
    res = item.resource
    what = f"{res.kind} {res.id!r} in {where(item)}"
    ecs = client(item, "ecs")
    started_by = names.started_by(item.session_id, res.arn)
    try:
        existing = worker_tasks.find_tasks(ecs, settings.worker.cluster, started_by)
    except ClientError as exc:
        aws_errors.raise_translated(exc, f"list the worker tasks of {what}")
        raise WorkerFailed(f"cannot list the worker tasks of {what} in cluster {settings.worker.cluster!r}: "
                           f"{aws_errors.error_code(exc)}: {aws_errors.error_message(exc)}") from exc
    if existing:
        task_arn = existing[0]
        logger.info("worker already started (retry)", extra={"task_arn": task_arn})
    else:
        db = database.describe(client(item, "rds"), res.kind, res.id, where(item))
        status = db.group_status(image.db_security_group or "")
        if status is None:
            raise SecurityGroupError(f"the temporary group {image.db_security_group} is no longer on {what}")
        if status not in database.ACTIVE_GROUP_STATUSES:
            raise DBNotAvailable(f"the temporary group {image.db_security_group} on {what} is {status!r}, "
                                 "not yet active; retried")
        task_arn = worker_tasks.run(ecs, worker_tasks.run_task_params(item, image, settings), what)
        metrics.add_metric(name="WorkersStarted", unit=MetricUnit.Count, value=1)
        logger.info("worker started", extra={"task_arn": task_arn, "started_by": started_by})
    return {**image.model_dump(), "phase": "started", "task_arn": task_arn,
            "started_at": image.started_at or round(time.time(), 3), "attempt": 0, "wait_seconds": 0,
            "waited_seconds": 0, "done": False}


def _failure(what: str, detail: str) -> WorkerFailed:
    return WorkerFailed(f"the backup worker of {what} failed: {detail}")


def check_worker(item: Item) -> dict[str, Any]:
    """One poll of the worker: still running (next wait), done (restore point), failed, or timed out."""
    settings = require_settings(item)
    image = require_image(item, task=True)
    res = item.resource
    what = f"{res.kind} {res.id!r} in {where(item)}"
    worker = settings.worker
    ecs = client(item, "ecs")
    assert image.task_arn is not None
    task = worker_tasks.describe(ecs, worker.cluster, image.task_arn)
    if task is None:
        raise _failure(what, f"its task {image.task_arn} is gone from cluster {worker.cluster!r}")
    status = task.get("lastStatus", "UNKNOWN")
    wait = WaitSettings(**{**item.wait.model_dump(), "timeout_seconds": worker.timeout_seconds})
    if status != "STOPPED":
        elapsed = time.time() - image.started_at if image.started_at else 0
        try:
            if elapsed > worker.timeout_seconds:
                raise WorkerTimedOut(
                    f"the backup worker of {what} ran {elapsed:.0f} s; the timeout is {worker.timeout_seconds} s")
            poll = next_poll(image, wait, ready=False, timeout_error=WorkerTimedOut,
                             what=f"the backup worker of {what} (task {image.task_arn}, {status})")
        except WorkerTimedOut:
            worker_tasks.stop(ecs, worker.cluster, image.task_arn, "rds-backup: worker timed out")
            logger.warning("worker timed out; stopped", extra={"task_arn": image.task_arn})
            raise
        return {**image.model_dump(), "phase": "running", "done": False, **poll, "task_status": status}

    container = worker_tasks.container_of(task, worker.container)
    reason = worker_tasks.stopped_reason(task, container)
    if task.get("stopCode") == "TaskFailedToStart":
        raise _failure(what, f"the task failed to start: {reason}")
    exit_code = container.get("exitCode")
    result = worker_tasks.read_result(names.result_url(settings.result_prefix, res.account, item.session_id, res.id))
    worker_error = (result or {}).get("error") if (result or {}).get("status") != "ok" else None
    if exit_code is None:
        raise _failure(what, f"worker stopped without an exit code: {worker_error or reason}")
    if exit_code != 0:
        raise _failure(what, f"{worker_error or reason} (exit code {exit_code})")
    if result is None:
        raise _failure(what, "it exited 0 but wrote no result document")
    if result.get("status") != "ok":
        raise _failure(what, str(result.get("error") or f"result status {result.get('status')!r}"))
    poll = next_poll(image, wait, ready=True, timeout_error=WorkerTimedOut, what=what)
    metrics.add_metric(name="ImageBackups", unit=MetricUnit.Count, value=1)
    logger.info("worker done", extra={"restore_point_id": result.get("restore_point_id"),
                                      "bytes": result.get("bytes")})
    return {**image.model_dump(), "phase": "done", "done": True, **poll, "exit_code": 0,
            "restore_point_id": result.get("restore_point_id"), "bytes": result.get("bytes"),
            "new_bytes": result.get("new_bytes"), "duration_seconds": result.get("duration_seconds"),
            **({"test": result["test"]} if result.get("kind") == "restore_test" else {}),
            **({"restored": result.get("restored")} if result.get("kind") == "restore" else {})}
