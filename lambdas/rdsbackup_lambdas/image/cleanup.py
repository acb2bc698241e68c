"""``cleanup_worker``: remove what the image-level backup made, on every path.

Each step is independent: a failure is recorded and the next step still runs. Nothing is assumed about
how far the session got: groups are found by their session tags (``prepare_worker`` may have failed
after creating them), tasks by ``startedBy`` (``start_worker`` may have failed after ``run_task``), the
bucket lease by its derived key. A second call finds nothing left and reports complete.
What still cannot be removed is tagged ``rdsbackup:sweep=true`` and reported in ``left_for_sweeper``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from rdsbackup_lambdas import aws_errors
from rdsbackup_lambdas.config import ImageConfig
from rdsbackup_lambdas.errors import CleanupIncomplete, SourceNotFound
from rdsbackup_lambdas.image import database, names, security_groups, temp_bucket, worker_tasks
from rdsbackup_lambdas.image.worker import client, group_names, where
from rdsbackup_lambdas.models import Item
from rdsbackup_lambdas.observability import MetricUnit, logger, metrics


class _Report:
    def __init__(self) -> None:
        self.removed: list[str] = []
        self.left: list[str] = []
        self.warnings: list[str] = []

    def failed(self, step: str, exc: BaseException) -> None:
        detail = f"{aws_errors.error_code(exc)}: {aws_errors.error_message(exc)}" if isinstance(exc, ClientError) \
            else f"{type(exc).__name__}: {exc}"
        self.warnings.append(f"cleanup: {step} failed ({detail})")
        logger.warning("cleanup step failed", extra={"step": step, "error": detail})

    def as_dict(self) -> dict[str, Any]:
        complete = not self.left and not self.warnings
        return {"complete": complete, "removed": self.removed, "left_for_sweeper": self.left,
                "warnings": self.warnings}


def _step(report: _Report, name: str, fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception as exc:  # one step's failure never stops the others
        report.failed(name, exc)


def cleanup_worker(item: Item, config: ImageConfig, sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Stop the worker, detach and delete both groups, release the bucket lease (and the bucket if unused)."""
    res = item.resource
    image = item.image
    settings = item.image_backup
    report = _Report()
    if settings is None:
        return report.as_dict()
    what = f"{res.kind} {res.id!r} in {where(item)}"

    def stop_tasks() -> None:
        ecs = client(item, "ecs")
        cluster = settings.worker.cluster
        arns = list(worker_tasks.find_tasks(ecs, cluster, names.started_by(item.session_id, res.arn)))
        if image is not None and image.task_arn and image.task_arn not in arns:
            arns.append(image.task_arn)
        for arn in arns:
            task = worker_tasks.describe(ecs, cluster, arn)
            if task is None or task.get("lastStatus") == "STOPPED" or task.get("desiredStatus") == "STOPPED":
                continue
            try:
                worker_tasks.stop(ecs, cluster, arn, "rds-backup: session cleanup")
                report.removed.append(f"task {arn}")
            except Exception as exc:
                report.failed(f"stop worker task {arn}", exc)
                _tag_task(ecs, arn, report)

    _step(report, "stop the worker", stop_tasks)

    ec2 = client(item, "ec2")
    groups: dict[str, dict[str, Any]] = {}

    def find_groups() -> None:
        for group in security_groups.find_by_session(ec2, item.session_id, res.arn):
            groups[group["GroupId"]] = group
        if image is not None:  # a group whose tags were lost is still ours when prepare reported it
            for gid in (image.db_security_group, image.worker_security_group):
                if gid and gid not in groups:
                    found = ec2.describe_security_groups(Filters=[{"Name": "group-id", "Values": [gid]}])
                    groups.update({g["GroupId"]: g for g in found["SecurityGroups"]})

    _step(report, "find the temporary security groups", find_groups)
    db_name, _worker_name = group_names(item)
    db_groups = [gid for gid, g in groups.items() if g.get("GroupName") == db_name]
    if image is not None and image.db_security_group and image.db_security_group not in db_groups:
        db_groups.append(image.db_security_group)

    def detach() -> None:
        rds = client(item, "rds")
        for gid in db_groups:
            try:
                if database.remove_group(rds, res.kind, res.id, gid, where(item)):
                    report.removed.append(f"security group {gid} from {res.id}")
            except SourceNotFound:
                return  # the DB is gone: nothing to detach from

    _step(report, f"remove the temporary group from {what}", detach)

    for gid in groups:
        _step(report, f"revoke the rules of security group {gid}", lambda gid=gid: security_groups.revoke_all(ec2, gid))
    for gid, group in groups.items():
        label = f"security group {gid} ({group.get('GroupName', '?')})"
        try:
            if security_groups.delete(ec2, gid, attempts=config.delete_attempts,
                                      interval=config.delete_interval_seconds, sleep=sleep):
                report.removed.append(label)
        except Exception as exc:
            report.failed(f"delete {label}", exc)
            try:
                security_groups.tag_for_sweeper(ec2, gid)
                report.left.append(label)
            except Exception as tag_exc:
                report.failed(f"tag {label} for the sweeper", tag_exc)
                report.left.append(label)

    engine = image.engine if image is not None else None
    if engine == "sqlserver" or (image is not None and image.temp_bucket) or res.engine.startswith("sqlserver"):
        _step(report, "release the temporary bucket", lambda: _release_bucket(item, config, report))

    result = report.as_dict()
    if not result["complete"]:
        metrics.add_metric(name="CleanupIncomplete", unit=MetricUnit.Count, value=1)
        logger.warning("cleanup incomplete", extra={"error": CleanupIncomplete.__name__, **result})
    else:
        logger.info("cleanup complete", extra={"removed": result["removed"]})
    return result


def _tag_task(ecs: Any, arn: str, report: _Report) -> None:
    try:
        ecs.tag_resource(resourceArn=arn, tags=[{"key": names.SWEEP_TAG, "value": "true"}])
    except Exception as exc:
        report.failed(f"tag task {arn} for the sweeper", exc)
    report.left.append(f"task {arn}")


def _release_bucket(item: Item, config: ImageConfig, report: _Report) -> None:
    res = item.resource
    bucket = names.temp_bucket_name(res.account, res.region, config.temp_bucket_secret)
    s3 = client(item, "s3")
    with temp_bucket.locked(config.table_name, bucket, config.lock_wait_seconds):
        present = temp_bucket.exists(s3, bucket, res.account)
        if present:
            temp_bucket.revoke(s3, bucket, res.account, item.session_id, res.id)
            if temp_bucket.empty(s3, bucket, res.account, names.temp_prefix(item.session_id, res.id)):
                report.removed.append(f"objects of this session in bucket {bucket}")
        temp_bucket.release_lease(config.table_name, bucket, item.session_id, res.id)
        if present:
            try:
                if temp_bucket.delete_if_unused(s3, config.table_name, bucket, res.account):
                    report.removed.append(f"bucket {bucket}")
            except Exception as exc:
                report.failed(f"delete bucket {bucket}", exc)
                try:
                    temp_bucket.tag_for_sweeper(s3, bucket, res.account)
                finally:
                    report.left.append(f"bucket {bucket}")
