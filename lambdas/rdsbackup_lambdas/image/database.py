"""What the worker needs to know about the DB (endpoint, network, credentials, engine) and the DB's
security-group list (adding and removing our group without touching the user's)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from rdsbackup_lambdas import aws_errors
from rdsbackup_lambdas.errors import CredentialsNotFound, EngineNotSupported, SecurityGroupError
from rdsbackup_lambdas.models import Kind
from rdsbackup_lambdas.snapshots import describe_cluster, describe_instance

ACTIVE_GROUP_STATUSES = frozenset({"active"})


def engine_family(engine: str) -> str:
    """``postgres`` or ``sqlserver`` (the worker's two engines), from the RDS engine name."""
    if engine in ("postgres", "aurora-postgresql"):
        return "postgres"
    if engine.startswith("sqlserver"):
        return "sqlserver"
    raise EngineNotSupported(
        f"image-level backup supports PostgreSQL (RDS and Aurora) and SQL Server, not engine {engine!r}; "
        "remove image_backup from the policy or select only supported databases"
    )


@dataclass
class Database:
    """A DB instance or Aurora cluster as the worker sees it."""

    kind: Kind
    id: str
    engine: str
    endpoint: str
    port: int
    vpc_id: str
    subnets: list[str]
    security_groups: list[dict[str, str]]
    master_secret_arn: str | None
    option_group: str | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def group_ids(self) -> list[str]:
        return [g["VpcSecurityGroupId"] for g in self.security_groups]

    @property
    def resource_id(self) -> str | None:
        """DbiResourceId / DbClusterResourceId: a database recreated under the same name has a new one."""
        return self.raw.get("DbiResourceId") or self.raw.get("DbClusterResourceId")

    def group_status(self, group_id: str) -> str | None:
        return next((g.get("Status") for g in self.security_groups if g["VpcSecurityGroupId"] == group_id), None)


def _subnet_group(rds: Any, raw: Any, where: str) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    if not raw:
        raise SecurityGroupError(f"the DB in {where} has no DB subnet group: it is not in a VPC")
    try:
        return rds.describe_db_subnet_groups(DBSubnetGroupName=raw)["DBSubnetGroups"][0]
    except ClientError as exc:
        aws_errors.raise_translated(exc, f"describe DB subnet group {raw!r} in {where}")
        raise


def describe(rds: Any, kind: Kind, db_id: str, where: str) -> Database:
    """The DB's endpoint, port, VPC, subnets, security groups, master secret and option group."""
    if kind == "instance":
        raw = describe_instance(rds, db_id, where)
        endpoint = raw.get("Endpoint") or {}
        address, port = endpoint.get("Address"), endpoint.get("Port")
        memberships = raw.get("OptionGroupMemberships") or []
        option_group = memberships[0]["OptionGroupName"] if memberships else None
    else:
        raw = describe_cluster(rds, db_id, where)
        address, port = raw.get("Endpoint"), raw.get("Port")
        option_group = None
    if not address or not port:
        raise SecurityGroupError(f"the DB {db_id!r} in {where} has no endpoint yet (status {raw.get('Status')!r})")
    subnet_group = _subnet_group(rds, raw.get("DBSubnetGroup"), where)
    return Database(
        kind=kind, id=db_id, engine=raw.get("Engine", "unknown"), endpoint=address, port=int(port),
        vpc_id=subnet_group.get("VpcId", ""),
        subnets=[s["SubnetIdentifier"] for s in subnet_group.get("Subnets") or []],
        security_groups=list(raw.get("VpcSecurityGroups") or []),
        master_secret_arn=(raw.get("MasterUserSecret") or {}).get("SecretArn"),
        option_group=option_group, raw=raw,
    )


def credentials_secret(db: Database, policy_secret_arn: str | None, where: str) -> str:
    """The secret the worker reads the DB's credentials from (its ARN only: never the password).

    The policy's ``image_backup.secret_arn`` wins; else the RDS-managed master secret.
    """
    if policy_secret_arn:
        return policy_secret_arn
    if db.master_secret_arn:
        return db.master_secret_arn
    noun = "DB instance" if db.kind == "instance" else "DB cluster"
    flag = "modify-db-instance" if db.kind == "instance" else "modify-db-cluster"
    raise CredentialsNotFound(
        f"{noun} {db.id!r} in {where} has no RDS-managed master secret and the policy sets no "
        f"image_backup.secret_arn: turn on 'Manage master credentials in AWS Secrets Manager' "
        f"(aws rds {flag} --manage-master-user-password) or set image_backup.secret_arn to a secret "
        "holding the username and password"
    )


def set_security_groups(rds: Any, kind: Kind, db_id: str, group_ids: list[str], where: str) -> None:
    """Replace the DB's VPC security groups, applied immediately."""
    try:
        if kind == "instance":
            rds.modify_db_instance(DBInstanceIdentifier=db_id, VpcSecurityGroupIds=group_ids, ApplyImmediately=True)
        else:
            rds.modify_db_cluster(DBClusterIdentifier=db_id, VpcSecurityGroupIds=group_ids, ApplyImmediately=True)
    except ClientError as exc:
        translated = aws_errors.translate(exc, f"change the security groups of {db_id!r} in {where}")
        if translated is not exc:
            raise translated from exc
        raise SecurityGroupError(
            f"cannot change the security groups of {db_id!r} in {where}: {aws_errors.error_code(exc)}: "
            f"{aws_errors.error_message(exc)}"
        ) from exc


def add_group(rds: Any, db: Database, group_id: str, where: str) -> bool:
    """Add ``group_id`` to the DB's groups (keeping its own). Returns whether a change was made."""
    if group_id in db.group_ids:
        return False
    set_security_groups(rds, db.kind, db.id, [*db.group_ids, group_id], where)
    return True


def remove_group(rds: Any, kind: Kind, db_id: str, group_id: str, where: str) -> bool:
    """Remove ``group_id`` from the DB's current groups, keeping every other (also ones added meanwhile)."""
    current = describe(rds, kind, db_id, where)
    if group_id not in current.group_ids:
        return False
    rest = [g for g in current.group_ids if g != group_id]
    if not rest:
        raise SecurityGroupError(
            f"the DB {db_id!r} in {where} has only our temporary group {group_id}; RDS needs at least one, so it "
            "is left for the sweeper (add the DB's own group back first)"
        )
    set_security_groups(rds, kind, db_id, rest, where)
    return True
