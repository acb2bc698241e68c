"""The worker: an ECS task (Fargate, or EC2 through a capacity provider) running ``rdsbackup job``.

The task's ``startedBy`` derives from the session and the resource, so a retried ``start_worker`` finds
the task its first try started (``list_tasks(startedBy=...)``) instead of starting a second one. The job
spec goes in the environment variable ``RDSBACKUP_JOB``: it names the credentials secret, never the
password. The worker writes its result document to ``result_url`` in the repository bucket.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlparse

from botocore.exceptions import ClientError

from rdsbackup_lambdas import aws_errors, aws_sessions
from rdsbackup_lambdas.errors import WorkerFailed
from rdsbackup_lambdas.image import names
from rdsbackup_lambdas.models import ImageBackup, ImageState, Item

JOB_ENV = "RDSBACKUP_JOB"
RUNNING_STATUSES = frozenset({"PROVISIONING", "PENDING", "ACTIVATING", "RUNNING", "DEACTIVATING", "STOPPING",
                              "DEPROVISIONING"})


def job_spec(item: Item, image: ImageState, settings: ImageBackup) -> dict[str, Any]:
    """The worker's job (docs/state-machine-contract.md, "The worker job"). No secrets in it."""
    res = item.resource
    sqlserver = None
    if image.engine == "sqlserver":
        sqlserver = {"temp_bucket": image.temp_bucket, "temp_prefix": image.temp_prefix}
    repository = settings.repository_url
    # each account's worker writes results only under its own account's prefix (docs/security.md)
    result_url = names.result_url(settings.result_prefix, res.account, item.session_id, res.id)
    if item.restore_test is not None:  # the restore test's validation (worker_image/rdsbackup/restore_test_job.py)
        return {
            "kind": "restore_test", "session_id": item.session_id, "resource_arn": res.arn,
            "source_id": item.restore_test.get("source_id") or res.id, "engine": image.engine,
            "host": image.endpoint, "port": image.port, "secret_arn": image.secret_arn,
            "repository": repository, "restore_point_id": item.restore_test.get("restore_point_id"),
            "check_snapshot": bool(item.restore_test.get("check_snapshot", True)),
            "compare_restore_point_id": item.restore_test.get("compare_restore_point_id"),
            "result_url": result_url, "sqlserver": sqlserver,
        }
    if item.restore_database is not None:  # a database-level restore (worker_image/rdsbackup/restore_job.py)
        return {
            "kind": "restore", "session_id": item.session_id, "resource_arn": res.arn, "source_id": res.id,
            "engine": image.engine, "host": image.endpoint, "port": image.port, "secret_arn": image.secret_arn,
            "repository": repository, **item.restore_database, "result_url": result_url, "sqlserver": sqlserver,
        }
    return {
        "session_id": item.session_id, "resource_arn": res.arn, "source_id": res.id,
        "source_resource_id": image.resource_id, "engine": image.engine, "host": image.endpoint,
        "port": image.port, "secret_arn": image.secret_arn, "databases": None,
        "repository": repository,
        "repository_kms_key_arn": settings.repository_kms_key_arn,
        "retention": settings.retention.model_dump(),
        "result_url": result_url,
        "sqlserver": sqlserver,
    }


def run_task_params(item: Item, image: ImageState, settings: ImageBackup) -> dict[str, Any]:
    """The ``ecs.run_task`` request of the session's worker for this resource."""
    worker = settings.worker
    params: dict[str, Any] = {
        "cluster": worker.cluster,
        "taskDefinition": worker.task_family,
        "count": 1,
        "startedBy": names.started_by(item.session_id, item.resource.arn),
        "networkConfiguration": {"awsvpcConfiguration": {
            "subnets": list(image.subnets), "securityGroups": [image.worker_security_group],
            "assignPublicIp": "DISABLED",
        }},
        "overrides": {
            "containerOverrides": [{
                "name": worker.container, "command": ["job"],
                "environment": [{"name": JOB_ENV, "value": json.dumps(job_spec(item, image, settings),
                                                                      separators=(",", ":"))}],
            }],
            "cpu": str(worker.cpu), "memory": str(worker.memory),
        },
        "tags": [{"key": k, "value": v}
                 for k, v in names.temporary_tags(item.session_id, item.resource.arn).items()],
    }
    if worker.launch_type == "EC2" and worker.capacity_provider:
        params["capacityProviderStrategy"] = [{"capacityProvider": worker.capacity_provider, "weight": 1, "base": 0}]
    else:
        params["launchType"] = worker.launch_type
    return params


def find_tasks(ecs: Any, cluster: str, started_by: str) -> list[str]:
    """The task ARNs started with ``started_by`` (running or recently stopped), newest listing first."""
    found: list[str] = []
    for status in ("RUNNING", "STOPPED"):
        paginator = ecs.get_paginator("list_tasks")
        for page in paginator.paginate(cluster=cluster, startedBy=started_by, desiredStatus=status):
            found += [arn for arn in page.get("taskArns", []) if arn not in found]
    return found


def describe(ecs: Any, cluster: str, task_arn: str) -> dict[str, Any] | None:
    result = ecs.describe_tasks(cluster=cluster, tasks=[task_arn], include=["TAGS"])
    return result["tasks"][0] if result.get("tasks") else None


def stop(ecs: Any, cluster: str, task_arn: str, reason: str) -> None:
    ecs.stop_task(cluster=cluster, task=task_arn, reason=reason[:255])


def container_of(task: dict[str, Any], name: str) -> dict[str, Any]:
    containers = task.get("containers") or []
    return next((c for c in containers if c.get("name") == name), containers[0] if containers else {})


def stopped_reason(task: dict[str, Any], container: dict[str, Any]) -> str:
    """The most specific reason ECS gives for a stopped task."""
    parts = [p for p in (container.get("reason"), task.get("stoppedReason")) if p]
    return "; ".join(parts) or "no reason given"


def run(ecs: Any, params: dict[str, Any], what: str) -> str:
    """Start the task; raise ``WorkerFailed`` with ECS's reason when it cannot be placed."""
    try:
        result = ecs.run_task(**params)
    except ClientError as exc:
        aws_errors.raise_translated(exc, f"start the backup worker of {what}")
        raise WorkerFailed(
            f"the backup worker of {what} could not be started: {aws_errors.error_code(exc)}: "
            f"{aws_errors.error_message(exc)}"
        ) from exc
    failures = result.get("failures") or []
    if failures or not result.get("tasks"):
        reasons = "; ".join(f"{f.get('reason')}{' (' + f['detail'] + ')' if f.get('detail') else ''}"
                            for f in failures) or "ECS returned no task"
        raise WorkerFailed(f"the backup worker of {what} could not be started: {reasons}")
    return result["tasks"][0]["taskArn"]


def read_result(url: str) -> dict[str, Any] | None:
    """The worker's result document (in the control account's repository bucket), or ``None``."""
    parsed = urlparse(url)
    if parsed.scheme != "s3":
        raise WorkerFailed(f"result_url must be an s3:// URL, got {url!r}")
    s3 = aws_sessions.client("s3", None)
    try:
        body = s3.get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"].read()
    except ClientError as exc:
        if aws_errors.error_code(exc) in ("NoSuchKey", "404", "NotFound"):
            return None
        raise
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise WorkerFailed(f"the worker's result document {url} is not JSON") from exc
    return document if isinstance(document, dict) else None
