"""``plan_database_restore``: a database-level restore (a restore point of the repository into a DB
instance or cluster) becomes an ITEM for the image-level worker steps (prepare, start, check, clean up):
the same temporary worker as a backup, in the target's account and region, with a restore job."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from rdsbackup_lambdas.errors import PlaceNotConfigured, RestoreInputInvalid, UnknownPolicy
from rdsbackup_lambdas.models import Item, Policy, Resource
from rdsbackup_lambdas.observability import logger
from rdsbackup_lambdas.restore.archive_retrieval import DEFAULT_TIER, retrieval_for
from rdsbackup_lambdas.restore.models import _Strict
from rdsbackup_lambdas.restore.plan import restore_id_for
from rdsbackup_lambdas.snapshots import split_arn


class DatabaseTarget(_Strict):
    arn: str

    @field_validator("arn")
    @classmethod
    def _arn(cls, value: str) -> str:
        parts = value.split(":", 6)
        if len(parts) != 7 or parts[2] != "rds" or parts[5] not in ("db", "cluster"):
            raise ValueError("must be arn:aws:rds:<region>:<account>:db:<id> or ...:cluster:<id>")
        return value


class DatabaseRestoreInput(_Strict):
    """``{"restore": "database", ...}`` (docs/restore.md)."""

    restore: Literal["database"]
    policy: str
    restore_point_id: str = Field(pattern=r"^[0-9a-f]{8,64}$")
    repository: str | None = None
    target: DatabaseTarget
    databases: list[str] | None = Field(None, min_length=1)
    target_database: str | None = Field(None, min_length=1, max_length=128)
    replace: bool = False
    include_globals: bool = False
    # restoring from the policy's archive repository: the S3 retrieval of its Glacier packs
    retrieval_tier: Literal["Standard", "Bulk", "Expedited"] | None = None
    retrieval_days: int | None = Field(None, ge=1, le=30)


def parse_database_input(event: dict[str, Any]) -> DatabaseRestoreInput:
    try:
        request = DatabaseRestoreInput.model_validate(event)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in error['loc']) or 'input'}: {error['msg']}"
                             for error in exc.errors())
        raise RestoreInputInvalid(f"the restore input is not valid: {problems} (see docs/restore.md)") from exc
    if request.target_database and len(request.databases or []) != 1:
        raise RestoreInputInvalid("target_database needs exactly one name in databases (the restore point may hold "
                                  "several databases)")
    return request


def plan_database_restore(request: DatabaseRestoreInput, policies: dict[str, Any], *, execution_name: str | None,
                          started_at: str | None) -> dict[str, Any]:
    """The ITEM the worker steps run with: the policy's repository and worker, the target's access role."""
    if request.policy not in policies:
        raise UnknownPolicy(f"unknown policy {request.policy!r} (configured: {', '.join(sorted(policies)) or 'none'})")
    policy = Policy.model_validate(policies[request.policy])
    if policy.image_backup is None:
        raise RestoreInputInvalid(f"policy {request.policy!r} has no image_backup: it has no repository and no "
                                  "worker to restore with")
    repository = policy.image_backup.repository_url
    retrieval = _archive_retrieval(request, policies[request.policy], policy)
    if retrieval is not None:
        repository = retrieval["repository"]
    elif request.repository is not None and not _names_repository(repository, request.repository):
        raise RestoreInputInvalid(f"repository {request.repository!r} is neither policy {request.policy!r}'s "
                                  f"repository ({repository}) nor its archive repository")
    region, account, kind, identifier = split_arn(request.target.arn)
    target = next((t for t in policy.selection.targets if (t.account, t.region) == (account, region)), None)
    if target is None:
        places = ", ".join(f"{t.account}/{t.region}" for t in policy.selection.targets)
        raise PlaceNotConfigured(f"policy {request.policy!r} runs workers in {places}, not in account {account} "
                                 f"region {region} where {request.target.arn} is")
    restore_id = restore_id_for(execution_name, started_at)
    item = Item(
        session_id=restore_id, policy=request.policy,
        resource=Resource(arn=request.target.arn, id=identifier, kind="instance" if kind == "db" else "cluster",
                          account=account, region=region),
        access_role_arn=target.access_role_arn, lease_seconds=policy.lease_seconds, wait=policy.wait,
        image_backup=policy.image_backup.model_copy(update={"repository_url": repository}),
        restore_database={"restore_point_id": request.restore_point_id, "databases": request.databases,
                          "target_database": request.target_database, "replace": request.replace,
                          "include_globals": request.include_globals},
    ).model_dump(exclude={"lease", "snapshot", "snapshot_wait", "replica", "restore_test", "replication"})
    logger.info("database restore planned", extra={"restore_id": restore_id, "target": request.target.arn})
    return {**item, "image": None, "image_cleanup": None, "error": None, "request": request.model_dump(),
            "started_at": started_at, "retrieval": retrieval}


def _names_repository(url: str, name: str) -> bool:
    """Whether ``name`` is the config name of the repository at ``url``. Buckets are named
    ``<deployment prefix>-<repository>-<control account>-<control region>``; the prefix is the deployment's
    (config ``deployment.name_prefix``), so only the part after it is compared."""
    bucket = url.removeprefix("s3://").split("/")[0]
    return re.search(rf"-{re.escape(name)}-\d{{12}}-[a-z]{{2}}(-[a-z]+)+-\d+$", bucket) is not None


def _archive_retrieval(request: DatabaseRestoreInput, raw_policy: dict[str, Any], policy: Policy) -> dict | None:
    """``$.retrieval`` when the input names the policy's archive repository (None otherwise): where the
    archive is, its packs' class, the retrieval tier (checked against the class) and the loop's bound."""
    from rdsbackup.errors import RepositoryError
    from rdsbackup.repository.retrieval import check_tier

    archive = (raw_policy.get("maintenance") or {}).get("archive")
    if archive is None or request.repository is None or request.repository != archive.get("name"):
        if request.retrieval_tier is not None or request.retrieval_days is not None:
            raise RestoreInputInvalid("retrieval_tier and retrieval_days apply only to a restore from the archive "
                                      f"repository of policy {request.policy!r} (repository: "
                                      f"{(archive or {}).get('name') or 'none configured'})")
        return None
    tier = request.retrieval_tier or DEFAULT_TIER
    try:
        check_tier(archive["storage_class"], tier)
    except RepositoryError as exc:
        raise RestoreInputInvalid(f"retrieval_tier: {exc} (archive repository {request.repository!r})") from None
    return retrieval_for(archive, request.restore_point_id, tier=tier, days=request.retrieval_days, wait=policy.wait)
