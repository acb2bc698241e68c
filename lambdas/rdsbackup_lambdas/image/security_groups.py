"""The two temporary security groups of an image-level backup.

- DB group (added to the DB): inbound TCP <port> from the worker group only; no outbound rule.
- Worker group (on the task's ENI): no inbound; outbound TCP <port> to the DB group only, plus TCP 443
  (S3, KMS, Secrets Manager, CloudWatch Logs, ECR endpoints): to the VPC endpoints the policy names
  (``image_backup.worker.egress``: prefix lists, endpoint security groups), else to anywhere.

Both are found by name and VPC before being created, so a retried ``prepare_worker`` reuses them, and
each rule is added only when missing. The default allow-all egress of a new group is revoked.

AWS refuses to delete a group that another group's rule references (moto does not): :func:`delete`
first revokes the rules of both groups, then deletes each.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from rdsbackup_lambdas import aws_errors
from rdsbackup_lambdas.errors import SecurityGroupError
from rdsbackup_lambdas.image import names
from rdsbackup_lambdas.models import WorkerEgress

ALL_TRAFFIC_EGRESS = {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
HTTPS_PORT = 443
DEPENDENCY_VIOLATION = "DependencyViolation"
_NOT_FOUND = frozenset({"InvalidGroup.NotFound", "InvalidGroupId.NotFound"})


def _tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def find(ec2: Any, name: str, vpc_id: str | None) -> dict[str, Any] | None:
    """The group called ``name`` (in ``vpc_id`` when given), or ``None``."""
    filters = [{"Name": "group-name", "Values": [name]}]
    if vpc_id:
        filters.append({"Name": "vpc-id", "Values": [vpc_id]})
    groups = ec2.describe_security_groups(Filters=filters)["SecurityGroups"]
    return groups[0] if groups else None


def find_by_session(ec2: Any, session_id: str, resource_arn: str) -> list[dict[str, Any]]:
    """The session's temporary groups for a resource, found by their tags (cleanup needs no VPC id)."""
    filters = [
        {"Name": f"tag:{names.TEMPORARY_TAG}", "Values": ["true"]},
        {"Name": f"tag:{names.SESSION_TAG}", "Values": [session_id]},
        {"Name": f"tag:{names.RESOURCE_TAG}", "Values": [resource_arn]},
    ]
    return ec2.describe_security_groups(Filters=filters)["SecurityGroups"]


def ensure_group(ec2: Any, name: str, vpc_id: str, description: str, tags: dict[str, str]) -> tuple[str, bool]:
    """The id of group ``name`` in ``vpc_id``, created (tagged, default egress revoked) when missing."""
    existing = find(ec2, name, vpc_id)
    if existing is not None:
        return existing["GroupId"], False
    try:
        group_id = ec2.create_security_group(
            GroupName=name, Description=description, VpcId=vpc_id,
            TagSpecifications=[{"ResourceType": "security-group", "Tags": _tag_list(tags)}],
        )["GroupId"]
    except ClientError as exc:
        if aws_errors.error_code(exc) == "InvalidGroup.Duplicate":  # a concurrent try made it
            again = find(ec2, name, vpc_id)
            if again is not None:
                return again["GroupId"], False
        raise SecurityGroupError(
            f"cannot create security group {name!r} in {vpc_id}: {aws_errors.error_code(exc)}: "
            f"{aws_errors.error_message(exc)}"
        ) from exc
    return group_id, True


def _rule_present(permissions: list[dict[str, Any]], wanted: dict[str, Any]) -> bool:
    for perm in permissions:
        if perm.get("IpProtocol") != wanted["IpProtocol"] or perm.get("FromPort") != wanted.get("FromPort") \
                or perm.get("ToPort") != wanted.get("ToPort"):
            continue
        for pair in wanted.get("UserIdGroupPairs", []):
            if any(p.get("GroupId") == pair["GroupId"] for p in perm.get("UserIdGroupPairs") or []):
                return True
        for cidr in wanted.get("IpRanges", []):
            if any(r.get("CidrIp") == cidr["CidrIp"] for r in perm.get("IpRanges") or []):
                return True
        for prefix_list in wanted.get("PrefixListIds", []):
            if any(p.get("PrefixListId") == prefix_list["PrefixListId"] for p in perm.get("PrefixListIds") or []):
                return True
    return False


def _authorize(ec2: Any, group_id: str, direction: str, rule: dict[str, Any]) -> None:
    call = ec2.authorize_security_group_ingress if direction == "ingress" else ec2.authorize_security_group_egress
    try:
        call(GroupId=group_id, IpPermissions=[rule])
    except ClientError as exc:
        if aws_errors.error_code(exc) != "InvalidPermission.Duplicate":
            raise


def _revoke_default_egress(ec2: Any, group: dict[str, Any]) -> None:
    if not _rule_present(group.get("IpPermissionsEgress") or [], ALL_TRAFFIC_EGRESS):
        return
    try:
        ec2.revoke_security_group_egress(GroupId=group["GroupId"], IpPermissions=[ALL_TRAFFIC_EGRESS])
    except ClientError as exc:
        if aws_errors.error_code(exc) != "InvalidPermission.NotFound":
            raise


def db_ingress_rule(worker_group: str, port: int) -> dict[str, Any]:
    return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port,
            "UserIdGroupPairs": [{"GroupId": worker_group, "Description": "rds-backup worker"}]}


def worker_egress_rules(db_group: str, port: int, egress: WorkerEgress | None = None) -> list[dict[str, Any]]:
    https = {"IpProtocol": "tcp", "FromPort": HTTPS_PORT, "ToPort": HTTPS_PORT}
    if egress is None:
        endpoints = [{**https, "IpRanges": [
            {"CidrIp": "0.0.0.0/0", "Description": "AWS endpoints (S3, KMS, Secrets Manager, logs)"}]}]
    else:
        endpoints = [{**https, "PrefixListIds": [{"PrefixListId": pl, "Description": "VPC gateway endpoint"}]}
                     for pl in egress.prefix_lists]
        endpoints += [{**https, "UserIdGroupPairs": [{"GroupId": sg, "Description": "VPC interface endpoints"}]}
                      for sg in egress.security_groups]
    return [{"IpProtocol": "tcp", "FromPort": port, "ToPort": port,
             "UserIdGroupPairs": [{"GroupId": db_group, "Description": "the database"}]}, *endpoints]


def ensure_pair(ec2: Any, *, vpc_id: str, port: int, db_name: str, worker_name: str,
                tags: dict[str, str], what: str, egress: WorkerEgress | None = None) -> dict[str, Any]:
    """Create (or find) both groups and make their rules exactly the contract's. Idempotent."""
    try:
        db_group, db_created = ensure_group(
            ec2, db_name, vpc_id, f"rds-backup temporary: inbound to {what} from its backup worker",
            {**tags, "Name": db_name})
        worker_group, worker_created = ensure_group(
            ec2, worker_name, vpc_id, f"rds-backup temporary: backup worker of {what}", {**tags, "Name": worker_name})
        groups = {g["GroupId"]: g for g in ec2.describe_security_groups(GroupIds=[db_group, worker_group])[
            "SecurityGroups"]}
        for group_id in (db_group, worker_group):
            _revoke_default_egress(ec2, groups[group_id])
        ingress = db_ingress_rule(worker_group, port)
        if not _rule_present(groups[db_group].get("IpPermissions") or [], ingress):
            _authorize(ec2, db_group, "ingress", ingress)
        for rule in worker_egress_rules(db_group, port, egress):
            if not _rule_present(groups[worker_group].get("IpPermissionsEgress") or [], rule):
                _authorize(ec2, worker_group, "egress", rule)
    except ClientError as exc:
        aws_errors.raise_translated(exc, f"set up the temporary security groups of {what}")
        raise SecurityGroupError(
            f"cannot set up the temporary security groups of {what}: {aws_errors.error_code(exc)}: "
            f"{aws_errors.error_message(exc)}"
        ) from exc
    return {"db_security_group": db_group, "worker_security_group": worker_group,
            "created_groups": [g for g, made in ((db_group, db_created), (worker_group, worker_created)) if made]}


def _strip(perm: dict[str, Any]) -> dict[str, Any]:
    """A permission as describe returns it, in the shape revoke accepts (empty lists dropped)."""
    keep = ("IpProtocol", "FromPort", "ToPort", "IpRanges", "Ipv6Ranges", "PrefixListIds", "UserIdGroupPairs")
    return {k: perm[k] for k in keep if perm.get(k) not in (None, [])}


def revoke_all(ec2: Any, group_id: str) -> None:
    """Remove every rule of a group (so no other group depends on it). A missing group or rule is fine."""
    try:
        groups = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    except ClientError as exc:
        if aws_errors.error_code(exc) in _NOT_FOUND:
            return
        raise
    for group in groups:
        for direction, perms in (("ingress", group.get("IpPermissions")), ("egress", group.get("IpPermissionsEgress"))):
            call = ec2.revoke_security_group_ingress if direction == "ingress" else ec2.revoke_security_group_egress
            for perm in perms or []:
                try:
                    call(GroupId=group_id, IpPermissions=[_strip(perm)])
                except ClientError as exc:
                    if aws_errors.error_code(exc) not in ("InvalidPermission.NotFound", *_NOT_FOUND):
                        raise


def delete(ec2: Any, group_id: str, *, attempts: int, interval: float,
           sleep: Callable[[float], None] = time.sleep) -> bool:
    """Delete a group, retrying ``DependencyViolation`` (an ENI still detaching) up to ``attempts`` times.

    Returns ``True`` when deleted now, ``False`` when it was already gone; raises the last
    ``ClientError`` when it still cannot be deleted.
    """
    for attempt in range(1, attempts + 1):
        try:
            ec2.delete_security_group(GroupId=group_id)
            return True
        except ClientError as exc:
            code = aws_errors.error_code(exc)
            if code in _NOT_FOUND:
                return False
            if code != DEPENDENCY_VIOLATION or attempt == attempts:
                raise
            sleep(interval)
    return False  # pragma: no cover (the loop returns or raises)


def tag_for_sweeper(ec2: Any, resource_id: str) -> None:
    ec2.create_tags(Resources=[resource_id], Tags=[{"Key": names.SWEEP_TAG, "Value": "true"}])


def is_dependency_violation(exc: BaseException) -> bool:
    return isinstance(exc, ClientError) and aws_errors.error_code(exc) == DEPENDENCY_VIOLATION
