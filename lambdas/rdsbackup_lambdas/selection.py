"""Which resources a policy backs up, and the session that backs them up.

Selection runs in every target (account + region) of the policy through its access role: explicit
resources (ARNs, or identifiers matched in every target) and tag selection (every tag of the policy
must match) over ``describe_db_instances`` / ``describe_db_clusters`` pages. Instances that are members
of an Aurora cluster are never selected as instances: the cluster is the unit of backup.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from rdsbackup_lambdas import aws_errors, aws_sessions
from rdsbackup_lambdas.clock import parse_time
from rdsbackup_lambdas.errors import NoResourcesSelected, ResourceNotInPolicy, TooManyResources, UnknownPolicy
from rdsbackup_lambdas.models import Item, Policy, Replication, ResolvePolicyInput, Resource, Target
from rdsbackup_lambdas.observability import logger

# what the states of a resource's execution add to its ITEM (docs/state-machine-contract.md)
RESULT_KEYS = ("lease", "snapshot", "replica", "retention", "image", "image_cleanup", "error")


def session_id_for(policy: str, execution_name: str | None, started_at: str | None) -> str:
    """``<policy>-<YYYYMMDDTHHMMSS>-<6 hex>``: stable for one execution, so a retried resolve agrees."""
    start = parse_time(started_at) or datetime.now(UTC)
    seed = execution_name or start.isoformat()
    digest = hashlib.sha256(seed.encode()).hexdigest()[:6]
    return f"{policy}-{start.strftime('%Y%m%dT%H%M%S')}-{digest}"




def _tags_match(tag_list: list[dict[str, str]] | None, wanted: dict[str, str]) -> bool:
    if not wanted:
        return False
    tags = {t["Key"]: t.get("Value", "") for t in tag_list or []}
    return all(key in tags and (value == "*" or tags[key] == value) for key, value in wanted.items())


def _arn_parts(arn: str) -> tuple[str, str, str, str] | None:
    parts = arn.split(":", 6)
    if len(parts) == 7 and parts[0] == "arn" and parts[2] == "rds" and parts[5] in ("db", "cluster"):
        return parts[3], parts[4], parts[5], parts[6]
    return None


def _discover(target: Target, session_id: str, members: set[str]) -> list[tuple[Resource, list[dict[str, str]]]]:
    """Every DB instance (not a cluster member) and DB cluster in a target, with its tags.

    Identifiers and ARNs of cluster members are added to ``members``.
    """
    rds = aws_sessions.client("rds", target.region, target.access_role_arn, session_id)
    found: list[tuple[Resource, list[dict[str, str]]]] = []
    try:
        for page in rds.get_paginator("describe_db_instances").paginate():
            for db in page["DBInstances"]:
                if db.get("DBClusterIdentifier"):
                    # An Aurora cluster member: its cluster is the unit of backup.
                    members.update({db["DBInstanceArn"], db["DBInstanceIdentifier"].lower()})
                    continue
                found.append((Resource(
                    arn=db["DBInstanceArn"], id=db["DBInstanceIdentifier"], kind="instance",
                    account=target.account, region=target.region, engine=db.get("Engine", "unknown"),
                ), db.get("TagList") or []))
        for page in rds.get_paginator("describe_db_clusters").paginate():
            for cluster in page["DBClusters"]:
                found.append((Resource(
                    arn=cluster["DBClusterArn"], id=cluster["DBClusterIdentifier"], kind="cluster",
                    account=target.account, region=target.region, engine=cluster.get("Engine", "unknown"),
                ), cluster.get("TagList") or []))
    except ClientError as exc:
        aws_errors.raise_translated(exc, f"list databases in account {target.account} region {target.region}")
    return found


def select_resources(policy_name: str, policy: Policy, session_id: str) -> list[tuple[Resource, Target]]:
    """The resources a policy selects, each with the target (account/region/role) it lives in."""
    selection = policy.selection
    explicit = [r.strip() for r in selection.resources if r.strip()]
    matched: dict[str, tuple[Resource, Target]] = {}
    seen_explicit: set[str] = set()
    members: set[str] = set()
    for target in selection.targets:
        for resource, tags in _discover(target, session_id, members):
            hit = [e for e in explicit if e == resource.arn or e.lower() == resource.id.lower()]
            if hit or _tags_match(tags, selection.tags):
                matched.setdefault(resource.arn, (resource, target))
                seen_explicit.update(hit)
    for entry in explicit:
        if entry in seen_explicit:
            continue
        if entry in members or entry.lower() in members:
            logger.warning(
                "explicitly selected DB instance is an Aurora cluster member; select its cluster instead",
                extra={"resource": entry},
            )
            continue
        # Named in the policy but not found: keep it, so its failure (SourceNotFound) shows in the report.
        missing = _missing_resource(entry, selection.targets)
        if missing is not None and missing[0].arn not in matched:
            logger.warning("explicitly selected resource not found", extra={"resource": entry})
            matched[missing[0].arn] = missing
    return list(matched.values())


def _missing_resource(entry: str, targets: list[Target]) -> tuple[Resource, Target] | None:
    parts = _arn_parts(entry)
    if parts:
        region, account, kind_word, ident = parts
        target = next((t for t in targets if t.account == account and t.region == region), None)
        if target is None:
            logger.warning("explicit ARN outside the policy's targets; ignored", extra={"resource": entry})
            return None
        kind = "instance" if kind_word == "db" else "cluster"
        return Resource(arn=entry, id=ident, kind=kind, account=account, region=region), target
    target = targets[0]
    arn = f"arn:aws:rds:{target.region}:{target.account}:db:{entry}"
    return Resource(arn=arn, id=entry, kind="instance", account=target.account, region=target.region), target


def _replication_for(policy: Policy, resource: Resource) -> Replication | None:
    rep = policy.replication
    if rep is None:
        return None
    return Replication(
        region=rep.region or resource.region, account=rep.account or resource.account,
        kms_key_arn=rep.kms_key_arn, access_role_arn=rep.access_role_arn,
        staging_kms_key_arn=rep.staging_kms_key_arn, retention=rep.retention,
    )


def resolve_policy(request: ResolvePolicyInput, policies: dict[str, Any]) -> dict[str, Any]:
    """The session: its id, concurrency and one ITEM per selected resource (see the contract)."""
    if request.policy not in policies:
        known = ", ".join(sorted(policies)) or "none"
        raise UnknownPolicy(f"unknown policy {request.policy!r} (configured: {known})")
    policy = Policy.model_validate(policies[request.policy])
    session_id = session_id_for(request.policy, request.execution_name, request.started_at)
    selected = select_resources(request.policy, policy, session_id)
    if request.resources is not None:
        subset: dict[str, tuple[Resource, Target]] = {}
        for wanted in request.resources:
            hits = [s for s in selected if wanted == s[0].arn or wanted.lower() == s[0].id.lower()]
            if not hits:
                names = ", ".join(sorted(s[0].arn for s in selected)) or "nothing"
                raise ResourceNotInPolicy(
                    f"resource {wanted!r} is not selected by policy {request.policy!r} (it selects: {names})"
                )
            subset.update({h[0].arn: h for h in hits})
        selected = list(subset.values())
    if not selected:
        raise NoResourcesSelected(
            f"policy {request.policy!r} selects no DB instance or cluster in "
            + ", ".join(f"{t.account}/{t.region}" for t in policy.selection.targets)
        )
    if len(selected) > policy.max_resources:
        raise TooManyResources(
            f"policy {request.policy!r} selects {len(selected)} databases, more than its max_resources "
            f"({policy.max_resources}); raise max_resources in the config (the session's timeout grows with it) "
            "or split the policy"
        )
    items = [
        Item(
            session_id=session_id, policy=request.policy, resource=resource,
            access_role_arn=target.access_role_arn, staging_kms_key_arn=target.staging_kms_key_arn,
            snapshot_retention=policy.snapshot_retention,
            retention_min_age_seconds=policy.retention_min_age_seconds, replication=_replication_for(policy, resource),
            lease_seconds=policy.lease_seconds, wait=policy.wait, image_backup=policy.image_backup,
        ).model_dump(exclude_none=False,
                     exclude={"lease", "snapshot", "snapshot_wait", "replica", "image", "restore_test",
                              "restore_database"})
        for resource, target in sorted(selected, key=lambda s: s[0].arn)
    ]
    # every key a state reads, whichever path the resource takes, starts as null
    items = [{**item, **dict.fromkeys(RESULT_KEYS)} for item in items]
    logger.info("policy resolved", extra={"resource_count": len(items)})
    return {
        "session_id": session_id,
        "policy": request.policy,
        "started_at": request.started_at or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "max_concurrency": policy.concurrency,
        "items": items,
    }
