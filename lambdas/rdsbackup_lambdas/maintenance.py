"""The backup-account session of a policy: one worker (``rdsbackup maintain``) in the control account and
region that archives restore points, applies the backup repository's retention (forget, prune) and the
archive's retention. Production workers only append; every delete happens here.

The worker is an ECS Fargate task on the maintenance cluster; its ``startedBy`` derives from the session,
so a retried start finds the task its first try started. Networking: the subnets and security groups of
``NETWORK_JSON`` (config ``maintenance_network``), else the control region's default VPC (its default
security group, a public IP so the task reaches S3, KMS, ECR and CloudWatch Logs without a NAT gateway).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from typing import Any

from botocore.exceptions import ClientError
from pydantic import ConfigDict, Field

from rdsbackup_lambdas import aws_errors, aws_sessions
from rdsbackup_lambdas.errors import ConfigurationError, UnknownPolicy, WorkerFailed, WorkerTimedOut
from rdsbackup_lambdas.image import worker_tasks
from rdsbackup_lambdas.models import PollState, WaitSettings
from rdsbackup_lambdas.observability import logger
from rdsbackup_lambdas.polling import next_poll

JOB_ENV = "RDSBACKUP_JOB"
RECORD_PREFIX = "maintenance#"
_SUBJECT_MAX = 100


class MaintenanceState(PollState):
    """What the start and check states pass along (``$.worker``)."""

    model_config = ConfigDict(extra="allow")

    session_id: str
    policy: str
    task_arn: str
    cluster: str
    container: str
    result_url: str
    started_at: float
    timeout_seconds: int
    done: bool = False
    wait: WaitSettings = Field(default_factory=WaitSettings)


def session_id_for(policy: str, execution_name: str) -> str:
    return f"{policy}-maintenance-{execution_name}"[:128]


def started_by(session_id: str) -> str:
    """ECS startedBy (at most 36 characters) of the session's worker."""
    return "rdsbackup-m-" + hashlib.sha256(session_id.encode()).hexdigest()[:24]


def maintenance_of(policies: dict[str, Any], policy: str) -> dict[str, Any]:
    if policy not in policies:
        raise UnknownPolicy(f"policy {policy!r} is not configured (known: {', '.join(sorted(policies)) or 'none'})")
    section = policies[policy].get("maintenance")
    if not section:
        raise ConfigurationError(f"policy {policy!r} takes no image-level backups: it has no backup-account session")
    return section


def job_spec(policy: str, session_id: str, section: dict[str, Any]) -> dict[str, Any]:
    """The worker's job (docs/state-machine-contract.md, "The maintenance job")."""
    return {
        "session_id": session_id, "policy": policy,
        "repository": section["repository_url"], "repository_kms_key_arn": section.get("repository_kms_key_arn"),
        "retention": section.get("retention") or {}, "archive": section.get("archive"),
        "result_url": f"{section['result_prefix']}maintenance/{session_id}.json",
    }


def network(ec2: Any, configured: dict[str, Any]) -> dict[str, Any]:
    """The task's awsvpcConfiguration: configured subnets/groups, else the default VPC's."""
    subnets = list(configured.get("subnets") or [])
    groups = list(configured.get("security_groups") or [])
    public_ip = configured.get("assign_public_ip")
    if not subnets:
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}]).get("Vpcs", [])
        if not vpcs:
            raise ConfigurationError("the control region has no default VPC: set maintenance_network.subnets "
                                     "(and security_groups) in the config")
        vpc_id = vpcs[0]["VpcId"]
        subnets = [s["SubnetId"] for s in ec2.describe_subnets(
            Filters=[{"Name": "vpc-id", "Values": [vpc_id]}]).get("Subnets", [])]
        if not groups:
            groups = [g["GroupId"] for g in ec2.describe_security_groups(Filters=[
                {"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "group-name", "Values": ["default"]}],
            ).get("SecurityGroups", [])]
        if public_ip is None:
            public_ip = True  # default VPC subnets are public: reach AWS endpoints without a NAT gateway
    config: dict[str, Any] = {"subnets": subnets, "assignPublicIp": "ENABLED" if public_ip else "DISABLED"}
    if groups:
        config["securityGroups"] = groups
    return config


def start(policy: str, execution_name: str, policies: dict[str, Any], configured_network: dict[str, Any],
          wait: WaitSettings) -> dict[str, Any]:
    """Start the session's worker (or find the one a previous try started)."""
    section = maintenance_of(policies, policy)
    session_id = session_id_for(policy, execution_name)
    worker = section["worker"]
    spec = job_spec(policy, session_id, section)
    ecs = aws_sessions.client("ecs", None)
    tag = started_by(session_id)
    what = f"the maintenance worker of policy {policy!r}"
    try:
        existing = worker_tasks.find_tasks(ecs, worker["cluster"], tag)
    except ClientError as exc:
        aws_errors.raise_translated(exc, f"list the tasks of {what}")
        raise
    if existing:
        task_arn = existing[0]
        logger.info("maintenance worker already started (retry)", extra={"task_arn": task_arn})
    else:
        params = {
            "cluster": worker["cluster"], "taskDefinition": worker["task_family"], "count": 1, "startedBy": tag,
            "launchType": "FARGATE",
            "networkConfiguration": {"awsvpcConfiguration": network(aws_sessions.client("ec2", None),
                                                                    configured_network)},
            "overrides": {
                "containerOverrides": [{
                    "name": worker["container"], "command": ["maintain"],
                    "environment": [{"name": JOB_ENV, "value": json.dumps(spec, separators=(",", ":"))}],
                }],
                "cpu": str(worker["cpu"]), "memory": str(worker["memory"]),
            },
            "tags": [{"key": "rdsbackup:session", "value": session_id[:256]}],
        }
        task_arn = worker_tasks.run(ecs, params, f"policy {policy!r} (maintenance)")
        logger.info("maintenance worker started", extra={"task_arn": task_arn, "session_id": session_id})
    return MaintenanceState(
        session_id=session_id, policy=policy, task_arn=task_arn, cluster=worker["cluster"],
        container=worker["container"], result_url=spec["result_url"], started_at=round(time.time(), 3),
        timeout_seconds=int(worker["timeout_seconds"]), wait=wait,
    ).model_dump()


def check(state: MaintenanceState) -> dict[str, Any]:
    """One poll: running (next wait), done (the worker's result), failed, or timed out (then stopped)."""
    ecs = aws_sessions.client("ecs", None)
    what = f"the maintenance worker of policy {state.policy!r}"
    task = worker_tasks.describe(ecs, state.cluster, state.task_arn)
    if task is None:
        raise WorkerFailed(f"{what}: its task {state.task_arn} is gone from cluster {state.cluster!r}")
    status = task.get("lastStatus", "UNKNOWN")
    wait = WaitSettings(**{**state.wait.model_dump(), "timeout_seconds": state.timeout_seconds})
    if status != "STOPPED":
        try:
            if time.time() - state.started_at > state.timeout_seconds:
                raise WorkerTimedOut(f"{what} ran past its timeout of {state.timeout_seconds} s")
            poll = next_poll(state, wait, ready=False, timeout_error=WorkerTimedOut, what=f"{what} ({status})")
        except WorkerTimedOut:
            worker_tasks.stop(ecs, state.cluster, state.task_arn, "rds-backup: maintenance worker timed out")
            raise
        return {**state.model_dump(), **poll, "done": False, "task_status": status}
    container = worker_tasks.container_of(task, state.container)
    reason = worker_tasks.stopped_reason(task, container)
    if task.get("stopCode") == "TaskFailedToStart":
        raise WorkerFailed(f"{what} failed to start: {reason}")
    result = worker_tasks.read_result(state.result_url)
    exit_code = container.get("exitCode")
    if result is None:
        raise WorkerFailed(f"{what} wrote no result ({reason}, exit code {exit_code})")
    if result.get("status") != "ok" or exit_code not in (0, None):
        raise WorkerFailed(f"{what} failed: {result.get('error') or reason} (exit code {exit_code})")
    poll = next_poll(state, wait, ready=True, timeout_error=WorkerTimedOut, what=what)
    summary = {k: result.get(k) for k in ("archived", "already_archived", "forgotten", "kept_for_archive", "prune",
                                          "archive_retention", "warnings", "duration_seconds")}
    return {**state.model_dump(), **poll, "done": True, "result": summary}


def cleanup(state: dict[str, Any] | None) -> dict[str, Any]:
    """Stop the worker if it still runs (every path ends here). Never raises for a task already gone."""
    if not state or not state.get("task_arn"):
        return {"stopped": False, "note": "no worker was started"}
    ecs = aws_sessions.client("ecs", None)
    task = worker_tasks.describe(ecs, state["cluster"], state["task_arn"])
    if task is None or task.get("lastStatus") == "STOPPED":
        return {"stopped": False, "task_arn": state["task_arn"]}
    worker_tasks.stop(ecs, state["cluster"], state["task_arn"], "rds-backup: maintenance session ended")
    logger.info("maintenance worker stopped by cleanup", extra={"task_arn": state["task_arn"]})
    return {"stopped": True, "task_arn": state["task_arn"]}


def _error_text(error: Any) -> str | None:
    if not error:
        return None
    if isinstance(error, dict):
        cause = error.get("Cause") or ""
        with contextlib.suppress(ValueError, AttributeError):
            cause = json.loads(cause).get("errorMessage", cause)
        return f"{error.get('Error')}: {cause}".strip(": ")
    return str(error)


def report(policy: str, execution_name: str, started_at: str, worker: dict[str, Any] | None, error: Any,
           cleanup_result: dict[str, Any] | None, table: str, topic_arn: str) -> dict[str, Any]:
    """Record the session (DynamoDB ``maintenance#<session>``), notify on failure or warnings, return it."""
    session_id = session_id_for(policy, execution_name)
    result = (worker or {}).get("result") or {}
    warnings = list(result.get("warnings") or [])
    error_text = _error_text(error)
    status = "Failed" if error_text else ("Warning" if warnings else "Success")
    out = {
        "session_id": session_id, "policy": policy, "status": status, "started_at": started_at,
        "ended_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "error": error_text,
        "archived": [a.get("restore_point_id") for a in result.get("archived") or []],
        "forgotten": result.get("forgotten") or [], "kept_for_archive": result.get("kept_for_archive") or [],
        "archive_retention_deleted": (result.get("archive_retention") or {}).get("deleted") or [],
        "early_deletion_charge_usd": (result.get("archive_retention") or {}).get("early_deletion_charge_usd") or 0,
        "warnings": warnings, "cleanup": cleanup_result,
    }
    aws_sessions.client("dynamodb", None).put_item(TableName=table, Item={
        "pk": {"S": f"{RECORD_PREFIX}{session_id}"}, "policy": {"S": policy}, "status": {"S": status},
        "started_at": {"S": str(started_at)}, "ended_at": {"S": out["ended_at"]},
        "report": {"S": json.dumps(out, default=str)},
    })
    if status != "Success":
        subject = f"rds-backup {policy} maintenance: {status}"[:_SUBJECT_MAX]
        message = "\n".join([f"rds-backup maintenance session {session_id} (policy {policy}): {status}",
                             *(f"error: {error_text}" for _ in [0] if error_text),
                             *(f"warning: {w}" for w in warnings), "", json.dumps(out, indent=2, default=str)])
        aws_sessions.client("sns", topic_arn.split(":")[3]).publish(TopicArn=topic_arn, Subject=subject,
                                                                     Message=message)
    return out
