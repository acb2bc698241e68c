"""The orphan sweeper: removes image-level backup leftovers that cleanup could not (or never ran to) remove.

In every account+region that a configured policy selects from, through that place's access role:

1. worker tasks whose ``startedBy`` has the rds-backup prefix, running longer than the bound: stopped;
2. security groups tagged ``rdsbackup:temporary=true`` older than the bound (``rdsbackup:created-at``):
   removed from every DB instance/cluster that still has them, their rules revoked (AWS refuses to
   delete a group another group's rule references), then deleted;
3. the temporary bucket (``rdsbackup-tmp-<account>-<region>-<suffix>``) older than the bound with no live lease:
   emptied and deleted (under the bucket lock);
4. restore tests' throwaway DB instances and clusters (named ``<THROWAWAY_PREFIX>*``, the deployment's
   ``<name prefix>-test-``, and tagged ``rdsbackup:temporary=true`` and ``rdsbackup:restore-test``) older
   than the bound: deleted without a final snapshot (a cluster's instances first);

then expired leases in the table. A leftover whose session still holds its source's lease (``lease#<arn>``,
unexpired) belongs to a running backup and is left alone, whatever its age.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from rdsbackup_lambdas import aws_errors, aws_sessions, powers
from rdsbackup_lambdas.config import SweeperConfig
from rdsbackup_lambdas.image import database, names, security_groups, temp_bucket, worker_tasks
from rdsbackup_lambdas.models import ImageBackup, Policy
from rdsbackup_lambdas.observability import MetricUnit, logger, metrics

SWEEPER_SESSION = "sweeper"
LOCK_WAIT_SECONDS = 10


@dataclass
class Place:
    """An account+region to sweep, the role that reaches it, and the worker clusters used there."""

    account: str
    region: str
    role_arn: str | None
    clusters: set[str] = field(default_factory=set)

    def client(self, service: str) -> Any:
        return aws_sessions.client(service, self.region, self.role_arn, SWEEPER_SESSION)

    @property
    def label(self) -> str:
        return f"{self.account}/{self.region}"


def places(policies: dict[str, Any]) -> list[Place]:
    """Every distinct account+region where a policy runs a worker: image-level backups, or a snapshot-only
    policy's restore tests (only there can a session leave temporary resources, and only there is the
    worker-launch role the sweeper assumes)."""
    found: dict[tuple[str, str], Place] = {}
    for raw in policies.values():
        policy = Policy.model_validate(raw)
        test_worker = (raw.get("restore_test") or {}).get("worker")
        image: ImageBackup | None = policy.image_backup or (
            ImageBackup.model_validate(test_worker) if test_worker else None)
        if image is None:
            continue
        for target in policy.selection.targets:
            place = found.setdefault((target.account, target.region), Place(
                target.account, target.region, powers.role_for(target.access_role_arn, powers.LAUNCH)))
            place.clusters.add(image.worker.cluster)
    return list(found.values())


class Sweep:
    """One run of the sweeper and its report."""

    def __init__(self, config: SweeperConfig, now: float | None = None):
        self.config = config
        self.now = time.time() if now is None else now
        self.removed: dict[str, list[str]] = {"tasks": [], "security_groups": [], "buckets": [], "leases": [],
                                              "throwaways": []}
        self.kept: list[str] = []
        self.errors: list[str] = []
        self.live: set[tuple[str, str]] = set()

    # -- helpers ------------------------------------------------------------------------------------
    def error(self, what: str, exc: BaseException) -> None:
        detail = f"{aws_errors.error_code(exc)}: {aws_errors.error_message(exc)}" if isinstance(exc, ClientError) \
            else f"{type(exc).__name__}: {exc}"
        self.errors.append(f"{what}: {detail}")
        logger.warning("sweeper could not remove a leftover", extra={"what": what, "error": detail})

    def old(self, created: float | None) -> bool:
        return created is not None and self.now - created > self.config.max_age_seconds

    def is_live(self, tags: dict[str, str]) -> bool:
        return (tags.get(names.RESOURCE_TAG, ""), tags.get(names.SESSION_TAG, "")) in self.live

    def load_live_sessions(self) -> None:
        for item in temp_bucket._scan(self.config.table_name, "lease#"):
            if int(item.get("expires_at", {}).get("N", "0")) > self.now:
                self.live.add((item.get("resource_arn", {}).get("S", ""), item.get("owner", {}).get("S", "")))

    # -- steps --------------------------------------------------------------------------------------
    def tasks(self, place: Place) -> None:
        ecs = place.client("ecs")
        for cluster in sorted(place.clusters):
            try:
                arns = [a for page in ecs.get_paginator("list_tasks").paginate(cluster=cluster, desiredStatus="RUNNING")
                        for a in page.get("taskArns", [])]
            except ClientError as exc:
                if aws_errors.error_code(exc) in ("ClusterNotFoundException", "ClusterNotFound"):
                    continue
                raise
            for start in range(0, len(arns), 100):
                described = ecs.describe_tasks(cluster=cluster, tasks=arns[start:start + 100], include=["TAGS"])
                for task in described.get("tasks", []):
                    self._task(ecs, cluster, task, place)

    def _task(self, ecs: Any, cluster: str, task: dict[str, Any], place: Place) -> None:
        if not str(task.get("startedBy", "")).startswith(names.STARTED_BY_PREFIX):
            return
        tags = {t["key"]: t.get("value", "") for t in task.get("tags") or []}
        started = task.get("startedAt") or task.get("createdAt")
        created = started.timestamp() if hasattr(started, "timestamp") else names.parse_iso(
            tags.get(names.CREATED_AT_TAG))
        arn = task["taskArn"]
        if task.get("lastStatus") == "STOPPED" or not self.old(created) or self.is_live(tags):
            self.kept.append(f"task {arn}")
            return
        try:
            worker_tasks.stop(ecs, cluster, arn, "rds-backup sweeper: orphaned worker")
            self.removed["tasks"].append(arn)
        except Exception as exc:
            self.error(f"stop task {arn} in {place.label}", exc)

    def security_groups(self, place: Place) -> None:
        ec2 = place.client("ec2")
        pages = ec2.get_paginator("describe_security_groups").paginate(
            Filters=[{"Name": f"tag:{names.TEMPORARY_TAG}", "Values": ["true"]}])
        doomed: list[dict[str, Any]] = []
        for page in pages:
            for group in page["SecurityGroups"]:
                tags = {t["Key"]: t.get("Value", "") for t in group.get("Tags") or []}
                if self.old(names.parse_iso(tags.get(names.CREATED_AT_TAG))) and not self.is_live(tags):
                    doomed.append(group)
                else:
                    self.kept.append(f"security group {group['GroupId']}")
        if not doomed:
            return
        ids = {g["GroupId"] for g in doomed}
        self._detach(place, ids)
        for gid in ids:
            try:
                security_groups.revoke_all(ec2, gid)
            except Exception as exc:
                self.error(f"revoke the rules of security group {gid} in {place.label}", exc)
        for group in doomed:
            gid = group["GroupId"]
            try:
                if security_groups.delete(ec2, gid, attempts=1, interval=0):
                    self.removed["security_groups"].append(f"{gid} ({group.get('GroupName')})")
            except Exception as exc:
                self.error(f"delete security group {gid} in {place.label}", exc)

    def _detach(self, place: Place, ids: set[str]) -> None:
        rds = place.client("rds")
        holders: list[tuple[str, str, list[str]]] = []
        for page in rds.get_paginator("describe_db_instances").paginate():
            for db in page["DBInstances"]:
                if not db.get("DBClusterIdentifier"):
                    holders.append(("instance", db["DBInstanceIdentifier"],
                                    [g["VpcSecurityGroupId"] for g in db.get("VpcSecurityGroups") or []]))
        for page in rds.get_paginator("describe_db_clusters").paginate():
            for cluster in page["DBClusters"]:
                holders.append(("cluster", cluster["DBClusterIdentifier"],
                                [g["VpcSecurityGroupId"] for g in cluster.get("VpcSecurityGroups") or []]))
        for kind, db_id, groups in holders:
            for gid in ids.intersection(groups):
                try:
                    database.remove_group(rds, kind, db_id, gid, place.label)  # type: ignore[arg-type]
                except Exception as exc:
                    self.error(f"remove security group {gid} from {db_id} in {place.label}", exc)

    def bucket(self, place: Place) -> None:
        s3 = place.client("s3")
        name = names.temp_bucket_name(place.account, place.region, self.config.temp_bucket_secret)
        found = next((b for b in s3.list_buckets().get("Buckets", []) if b["Name"] == name), None)
        if found is None:
            return
        created = found.get("CreationDate")
        if not self.old(created.timestamp() if hasattr(created, "timestamp") else None):
            self.kept.append(f"bucket {name}")
            return
        with temp_bucket.locked(self.config.table_name, name, LOCK_WAIT_SECONDS):
            if temp_bucket.delete_if_unused(s3, self.config.table_name, name, place.account):
                self.removed["buckets"].append(name)
            else:
                self.kept.append(f"bucket {name} (leased)")

    def throwaways(self, place: Place) -> None:
        """Restore tests' throwaway instances and clusters that their run did not delete."""
        rds = place.client("rds")
        doomed: list[tuple[str, str, list[str]]] = []
        for page in rds.get_paginator("describe_db_clusters").paginate():
            for cluster in page["DBClusters"]:
                if self._old_throwaway(rds, cluster["DBClusterArn"], cluster.get("TagList")):
                    members = [m["DBInstanceIdentifier"] for m in cluster.get("DBClusterMembers") or []]
                    doomed.append(("cluster", cluster["DBClusterIdentifier"], members))
        for page in rds.get_paginator("describe_db_instances").paginate():
            for db in page["DBInstances"]:
                if db.get("DBClusterIdentifier"):
                    continue
                if self._old_throwaway(rds, db["DBInstanceArn"], db.get("TagList")):
                    doomed.append(("instance", db["DBInstanceIdentifier"], []))
        for kind, ident, members in doomed:
            try:
                for member in members:
                    rds.delete_db_instance(DBInstanceIdentifier=member, SkipFinalSnapshot=True)
                if kind == "cluster":
                    rds.delete_db_cluster(DBClusterIdentifier=ident, SkipFinalSnapshot=True)
                else:
                    rds.delete_db_instance(DBInstanceIdentifier=ident, SkipFinalSnapshot=True,
                                           DeleteAutomatedBackups=True)
                self.removed["throwaways"].append(f"{kind} {ident}")
            except Exception as exc:
                self.error(f"delete restore-test {kind} {ident} in {place.label}", exc)

    def _old_throwaway(self, rds: Any, arn: str, tag_list: list[dict[str, str]] | None) -> bool:
        tags = {t["Key"]: t.get("Value", "") for t in tag_list or []}
        if not tags:
            tags = {t["Key"]: t.get("Value", "")
                    for t in rds.list_tags_for_resource(ResourceName=arn).get("TagList") or []}
        if tags.get(names.TEMPORARY_TAG) != "true" or names.RESTORE_TEST_TAG not in tags:
            return False
        # ... and named as one: the launch role may delete nothing else (infra/stacks/access_stacks.py)
        if not arn.rsplit(":", 1)[-1].startswith(self.config.throwaway_prefix):
            return False
        if not self.old(names.parse_iso(tags.get(names.CREATED_AT_TAG))):
            self.kept.append(f"restore-test throwaway {arn}")
            return False
        return True

    def leases(self) -> None:
        for item in temp_bucket.expired_leases(self.config.table_name, self.now):
            try:
                if temp_bucket.delete_expired_lease(self.config.table_name, item, self.now):
                    self.removed["leases"].append(item["pk"]["S"])
            except Exception as exc:
                self.error(f"delete expired lease {item['pk']['S']}", exc)

    # -- the run ------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        try:
            self.load_live_sessions()
        except Exception as exc:  # without the leases nothing can be judged safe: remove nothing
            self.error("read the leases", exc)
            return self.report()
        for place in places(self.config.policies):
            for step, fn in (("worker tasks", self.tasks), ("security groups", self.security_groups),
                             ("temporary bucket", self.bucket), ("restore-test throwaways", self.throwaways)):
                try:
                    fn(place)
                except Exception as exc:
                    self.error(f"sweep {step} in {place.label}", exc)
        try:
            self.leases()
        except Exception as exc:
            self.error("sweep expired leases", exc)
        return self.report()

    def report(self) -> dict[str, Any]:
        result = {"removed": self.removed, "kept": self.kept, "errors": self.errors}
        count = sum(len(v) for v in self.removed.values())
        metrics.add_metric(name="OrphansRemoved", unit=MetricUnit.Count, value=count)
        logger.info("sweep finished", extra={"removed": self.removed, "errors": self.errors,
                                             "kept_count": len(self.kept)})
        return result


def sweep(config: SweeperConfig, now: float | None = None) -> dict[str, Any]:
    """Remove old leftovers everywhere the policies reach; return what was removed, kept and not removable."""
    return Sweep(config, now).run()
