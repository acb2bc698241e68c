"""The RPO check: which selected sources have no successful backup newer than their policy's RPO.

Run on a schedule. Per policy it selects the sources as a session would (the same selection in every
account and region, through the access roles), reads when each last succeeded
(:mod:`backup_freshness`), and counts a source as outside its RPO when its newest success is older than
the RPO, or when it never had one and has existed longer than the RPO (a database created an hour ago
is not late yet). A policy that cannot be checked (a role cannot be assumed, a throttled API) is
reported and emits no metric, so its alarm, which treats missing data as breaching, fires too.
"""

from __future__ import annotations

import time
from typing import Any

from botocore.exceptions import ClientError

from rdsbackup_lambdas import aws_sessions, backup_freshness, selection
from rdsbackup_lambdas.errors import RdsBackupError
from rdsbackup_lambdas.models import Policy, Resource, Target
from rdsbackup_lambdas.observability import logger

METRIC_NAMESPACE = "rdsbackup"
METRIC_NAME = "SourcesOutsideRpo"
CHECK_SESSION = "rpo-check"
_SUBJECT_MAX = 100


def _created_at(resource: Resource, target: Target) -> float | None:
    """When the database was created (epoch seconds), or None when it cannot be described (gone)."""
    rds = aws_sessions.client("rds", resource.region, target.access_role_arn, CHECK_SESSION)
    try:
        if resource.kind == "cluster":
            found = rds.describe_db_clusters(DBClusterIdentifier=resource.id)["DBClusters"][0]
            created = found.get("ClusterCreateTime")
        else:
            found = rds.describe_db_instances(DBInstanceIdentifier=resource.id)["DBInstances"][0]
            created = found.get("InstanceCreateTime")
    except ClientError:
        return None
    return created.timestamp() if hasattr(created, "timestamp") else None


def check_policy(name: str, raw_policy: dict[str, Any], table: str, now: float) -> dict[str, Any]:
    """``{"rpo_seconds", "checked", "outside": [{"arn", "last_success", "age_seconds", "reason"}]}``."""
    policy = Policy.model_validate(raw_policy)
    rpo = int(raw_policy.get("rpo_seconds") or 0)
    selected = selection.select_resources(name, policy, CHECK_SESSION)
    successes = backup_freshness.last_successes(table, name, (resource.arn for resource, _ in selected))
    outside = []
    for resource, target in sorted(selected, key=lambda s: s[0].arn):
        last = successes.get(resource.arn)
        if last is not None:
            age = now - last["succeeded_at"]
            if age > rpo:
                outside.append({"arn": resource.arn, "last_success": last["succeeded_at"], "age_seconds": round(age),
                                "reason": f"newest successful backup is {_hours(age)} old (RPO {_hours(rpo)})"})
            continue
        created = _created_at(resource, target)
        if created is None:
            outside.append({"arn": resource.arn, "last_success": None, "age_seconds": None,
                            "reason": "never backed up, and the database cannot be found"})
        elif now - created > rpo:
            outside.append({"arn": resource.arn, "last_success": None, "age_seconds": round(now - created),
                            "reason": f"never backed up, and it exists for {_hours(now - created)} "
                                      f"(RPO {_hours(rpo)})"})
    return {"rpo_seconds": rpo, "checked": len(selected), "outside": outside}


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"


def check_rpo(policies: dict[str, Any], table: str, topic_arn: str, now: float | None = None) -> dict[str, Any]:
    """Check every policy; publish one metric per checked policy and one SNS message naming the late sources."""
    now = time.time() if now is None else now
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name in sorted(policies):
        try:
            results[name] = check_policy(name, policies[name], table, now)
        except (RdsBackupError, ClientError, ValueError) as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
            logger.warning("RPO check of a policy failed", extra={"policy": name, "error": errors[name]})
    _put_metrics(results)
    if errors or any(result["outside"] for result in results.values()):
        _notify(results, errors, topic_arn)
    return {"policies": results, "errors": errors}


def _put_metrics(results: dict[str, Any]) -> None:
    if not results:
        return
    cloudwatch = aws_sessions.client("cloudwatch", None)
    data = [{"MetricName": METRIC_NAME, "Dimensions": [{"Name": "Policy", "Value": name}],
             "Value": float(len(result["outside"])), "Unit": "Count"} for name, result in results.items()]
    for start in range(0, len(data), 20):  # a conservative batch for PutMetricData
        cloudwatch.put_metric_data(Namespace=METRIC_NAMESPACE, MetricData=data[start:start + 20])


def _notify(results: dict[str, Any], errors: dict[str, str], topic_arn: str) -> None:
    late = sum(len(result["outside"]) for result in results.values())
    lines = [f"rds-backup RPO check: {late} source(s) without a successful backup within their RPO", ""]
    for name, result in results.items():
        for source in result["outside"]:
            lines.append(f"- policy {name}: {source['arn']}: {source['reason']}")
    for name, error in errors.items():
        lines.append(f"- policy {name}: could not be checked: {error}")
    subject = f"rds-backup: {late} source(s) outside their RPO" + (" (check errors)" if errors else "")
    sns = aws_sessions.client("sns", topic_arn.split(":")[3])
    sns.publish(TopicArn=topic_arn, Subject=subject[:_SUBJECT_MAX], Message="\n".join(lines))
