"""Where things live: the accounts and regions the config reaches, and the names that connect them.

Stacks in different accounts cannot reference each other's outputs, so the control plane finds the
roles and keys of the production-access and replica-target stacks by names derived here, in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from constructs import IConstruct

from infra.config import BackupConfig, Policy, RestoreTestWorker, WorkerSettings, maintenance_of

DEFAULT_NAME_PREFIX = "rdsbackup"
WORKER_CONTAINER = "worker"
RESULT_PREFIX = "rdsbackup-results/"
# The worker task's environment: the accounts that must own the buckets it reaches (ExpectedBucketOwner;
# worker_image/rdsbackup/s3_clients.py reads them, a test holds the names together).
REPOSITORY_OWNER_ENV = "RDSBACKUP_REPOSITORY_OWNER"
TEMP_BUCKET_OWNER_ENV = "RDSBACKUP_TEMP_BUCKET_OWNER"


@dataclass(frozen=True, order=True)
class Place:
    """An account and a region. Either may be a CDK token in a single-account, env-agnostic synth."""

    account: str
    region: str

    @property
    def suffix(self) -> str:
        return f"{self.account}-{self.region}"


@dataclass(frozen=True)
class Names:
    """Every physical name the app gives (roles, keys' aliases, buckets, clusters, schedules, alarms, stacks),
    derived from the deployment's name prefix (config ``deployment.name_prefix``): two deployments with
    different prefixes share no name, so they coexist in the same accounts. The default prefix keeps the
    names of the first release."""

    prefix: str = DEFAULT_NAME_PREFIX

    def __call__(self, *parts: str) -> str:
        return "-".join([self.prefix, *parts])

    @property
    def stack_prefix(self) -> str:
        """``RdsBackup`` (the default prefix: today's stack names), else ``<prefix>-RdsBackup``."""
        return "RdsBackup" if self.prefix == DEFAULT_NAME_PREFIX else f"{self.prefix}-RdsBackup"

    @property
    def control_stack(self) -> str:
        return f"{self.stack_prefix}Control"

    def role_arn(self, place: Place, name: str) -> str:
        return f"arn:aws:iam::{place.account}:role/{name}"

    def access_role_arn(self, place: Place) -> str:
        """The read role in a production account; the other powers' roles are named like it (infra.powers)."""
        return self.role_arn(place, self("read", place.region))

    def replica_role_arn(self, place: Place) -> str:
        """The role in a replica-target account/region that copies snapshots into it (the replica power)."""
        return self.role_arn(place, self("replica", place.region))

    def restore_role(self, region: str) -> str:
        """The role in an account/region (production or replica target) that restores snapshots there."""
        return self("restore", region)

    def restore_role_arn(self, place: Place) -> str:
        return self.role_arn(place, self.restore_role(place.region))

    def worker_role(self, region: str) -> str:
        """The ECS task role of the worker in a production account and region."""
        return self("worker", region)

    def worker_role_arn(self, place: Place) -> str:
        return self.role_arn(place, self.worker_role(place.region))

    def key_alias(self, key: str) -> str:
        """``alias/<prefix>-<key>``: control, tags, repository, staging, replica."""
        return f"alias/{self(key)}"

    def staging_key_arn(self, place: Place) -> str:
        return f"arn:aws:kms:{place.region}:{place.account}:{self.key_alias('staging')}"

    def replica_key_arn(self, place: Place) -> str:
        return f"arn:aws:kms:{place.region}:{place.account}:{self.key_alias('replica')}"

    def repository_bucket(self, repository: str, control: Place) -> str:
        """Buckets are named from the control place so worker roles in other accounts can name them."""
        return self(repository, control.account, control.region)

    @property
    def throwaway_prefix(self) -> str:
        """``<prefix>-test-``: how a restore test's throwaway instance or cluster is named (and its members);
        the Lambdas get it as ``THROWAWAY_PREFIX``, the launch role may delete only databases so named."""
        return self("test") + "-"

    @property
    def worker_cluster(self) -> str:
        return self("workers")

    @property
    def worker_task_family(self) -> str:
        return self("worker")

    # The backup-account session's worker (retention, archive) runs in the control account.
    @property
    def maintenance_cluster(self) -> str:
        return self("maintenance")

    @property
    def maintenance_task_family(self) -> str:
        return self("maintenance")

    @property
    def maintenance_role(self) -> str:
        return self("maintenance-worker")


NAMES_CONTEXT = "rdsbackup:name_prefix"


def names_of(scope: IConstruct) -> Names:
    """The names of the app ``scope`` belongs to (``build_app`` puts the prefix into the app's context)."""
    return Names(scope.node.try_get_context(NAMES_CONTEXT) or DEFAULT_NAME_PREFIX)


def repository_url(bucket: str, policy: str, storage_class: str = "STANDARD") -> str:
    """A policy's repository URL; packs go to `storage_class` (index, manifests, keys stay STANDARD)."""
    url = f"s3://{bucket}/{policy}"
    return url if storage_class == "STANDARD" else f"{url}?data-storage-class={storage_class}"


def repository_prefix(policy: str) -> str:
    """A policy's restore points live under its own prefix of the repository; a production account's
    worker reaches only the prefixes of the policies that back up its databases (docs/security.md)."""
    return policy


@dataclass(frozen=True)
class Topology:
    """Every place the config touches, derived from the validated config."""

    control: Place
    access_places: tuple[Place, ...]
    replica_places: tuple[Place, ...]
    worker_places: tuple[Place, ...] = ()
    names: Names = field(default_factory=lambda: Names())

    @property
    def restore_places(self) -> tuple[Place, ...]:
        """Where a restore can read snapshots and create databases: every production and replica place."""
        return tuple(sorted(set(self.access_places) | set(self.replica_places)))

    def sources_of(self, policy: Policy) -> list[Place]:
        accounts = policy.selection.accounts or [self.control.account]
        regions = policy.selection.regions or [self.control.region]
        return [Place(account, region) for account in accounts for region in regions]

    def replica_place(self, policy: Policy, source: Place) -> Place | None:
        replication = policy.replication
        if replication is None:
            return None
        return Place(replication.account or source.account, replication.region or source.region)


def build_topology(config: BackupConfig, *, control: Place) -> Topology:
    """All production-access places (sources, and source accounts in replica regions for staging)."""
    probe = Topology(control=control, access_places=(), replica_places=())
    access: set[Place] = set()
    replicas: set[Place] = set()
    workers: set[Place] = set()
    for policy in config.policies:
        for source in probe.sources_of(policy):
            access.add(source)
            if policy.image_backup is not None or test_worker_of(policy) is not None:
                workers.add(source)
            target = probe.replica_place(policy, source)
            if target is not None:
                replicas.add(target)
                if target.account != source.account and target.region != source.region:
                    # region-then-account chain: the regional copy is staged on the source account's key
                    access.add(Place(source.account, target.region))
    return Topology(control=control, access_places=tuple(sorted(access)), replica_places=tuple(sorted(replicas)),
                    worker_places=tuple(sorted(workers)), names=Names(config.deployment.name_prefix))


def runtime_policies(config: BackupConfig, topology: Topology, repository_key_arn: str = "") -> dict:
    """The policies as `resolve_policy` reads them (POLICIES_JSON; docs/state-machine-contract.md)."""
    timing, names = config.timing, topology.names
    wait = {
        "initial_seconds": timing.wait_initial_seconds,
        "max_seconds": timing.wait_max_seconds,
        "factor": timing.wait_factor,
        "timeout_seconds": timing.wait_timeout_seconds,
        "slot_timeout_seconds": timing.slot_wait_timeout_seconds,
    }
    policies = {}
    for policy in config.policies:
        sources = topology.sources_of(policy)
        replication = None
        if policy.replication is not None:
            # config validation guarantees a replicating policy has one replica place and one source account
            target = topology.replica_place(policy, sources[0])
            assert target is not None
            replication = {
                "region": target.region,
                "account": target.account,
                "kms_key_arn": policy.replication.kms_key_arn or names.replica_key_arn(target),
                "access_role_arn": names.replica_role_arn(target),
                # the source account's CMK in the target region, for the region-then-account chain
                "staging_kms_key_arn": names.staging_key_arn(Place(sources[0].account, target.region)),
                "retention": policy.replication.retention or policy.snapshot_retention,
            }
        policies[policy.name] = {
            "selection": {
                "resources": list(policy.selection.resources),
                "tags": dict(policy.selection.tags),
                "targets": [
                    {
                        "account": source.account,
                        "region": source.region,
                        "access_role_arn": names.access_role_arn(source),
                        "staging_kms_key_arn": names.staging_key_arn(source),
                    }
                    for source in sources
                ],
            },
            "snapshot_retention": policy.snapshot_retention,
            "retention_min_age_seconds": policy.retention_min_age_seconds,
            "concurrency": policy.concurrency,
            "max_resources": policy.max_resources,
            "lease_seconds": timing.lease_seconds,
            "wait": wait,
            "replication": replication,
            "image_backup": _image_backup(policy, config, topology, repository_key_arn),
            "maintenance": _maintenance(policy, config, topology, repository_key_arn),
            "rpo_seconds": policy.rpo_seconds,
            "restore_test": _restore_test(policy, topology),
        }
    return policies


def _image_backup(policy: Policy, config: BackupConfig, topology: Topology, repository_key_arn: str) -> dict | None:
    image = policy.image_backup
    if image is None:
        return None
    bucket = topology.names.repository_bucket(image.repository, topology.control)
    return {
        "repository_url": repository_url(bucket, policy.name, config.repositories[image.repository].storage_class),
        "repository_kms_key_arn": repository_key_arn,
        "retention": {"keep_last": image.retention.keep_last, "keep_days": image.retention.keep_days},
        "secret_arn": image.secret_arn,
        "result_prefix": f"s3://{bucket}/{RESULT_PREFIX}",
        "worker": _worker(image.worker, topology),
    }


def _worker(worker: WorkerSettings, topology: Topology) -> dict:
    return {
        "launch_type": worker.launch_type, "subnets": list(worker.subnets), "cpu": worker.cpu,
        "memory": worker.memory, "timeout_seconds": max(1, round(worker.timeout_minutes * 60)),
        "cluster": topology.names.worker_cluster, "task_family": topology.names.worker_task_family,
        "container": WORKER_CONTAINER, "capacity_provider": worker.capacity_provider,
        "egress": worker.egress.model_dump() if worker.egress else None,
    }



def test_worker_of(policy: Policy) -> RestoreTestWorker | None:
    """The test worker of a snapshot-only policy's restore tests (`restore_test.worker`), else None."""
    return policy.restore_test.worker if policy.restore_test is not None else None


def _restore_test(policy: Policy, topology: Topology) -> dict | None:
    test = policy.restore_test
    if test is None:
        return None
    worker = None
    if test.worker is not None:
        # shaped like image_backup's section: the test item's worker settings (no repository of its own)
        bucket = topology.names.repository_bucket(test.worker.results_repository, topology.control)
        worker = {"repository_url": None, "secret_arn": test.worker.secret_arn,
                  "result_prefix": f"s3://{bucket}/{RESULT_PREFIX}", "worker": _worker(test.worker, topology)}
    return {"sample": test.sample, "targets": policy.restore_test_targets, "instance_class": test.instance_class,
            "timeout_seconds": test.timeout_minutes * 60, "worker": worker, "retrieval_tier": test.retrieval_tier}


def _maintenance(policy: Policy, config: BackupConfig, topology: Topology, repository_key_arn: str) -> dict | None:
    """The backup-account session of a policy (``start_maintenance`` builds the worker's spec from it)."""
    settings = maintenance_of(policy)
    if settings is None or policy.image_backup is None:
        return None
    image = policy.image_backup
    bucket = topology.names.repository_bucket(image.repository, topology.control)
    archive = None
    if policy.archive is not None:
        archive_settings = config.repositories[policy.archive.repository]
        gfs = policy.archive.gfs
        archive = {
            # The archive's packs get their class from the spec (the URL carries none).
            "repository": repository_url(topology.names.repository_bucket(policy.archive.repository, topology.control),
                                         policy.name),
            "name": policy.archive.repository,
            "retrieval_timeout_hours": policy.archive.retrieval_timeout_hours,
            "kms_key_arn": repository_key_arn,
            "storage_class": archive_settings.storage_class,
            "after_days": policy.archive.after_days,
            "retention_days": policy.archive.retention_days,
            "gfs": gfs.model_dump() if gfs else {},
        }
    return {
        "repository_url": repository_url(bucket, policy.name, config.repositories[image.repository].storage_class),
        "repository_kms_key_arn": repository_key_arn,
        "retention": {"keep_last": image.retention.keep_last, "keep_days": image.retention.keep_days,
                      "min_age_seconds": policy.restore_point_min_age_seconds},
        "archive": archive,
        "result_prefix": f"s3://{bucket}/{RESULT_PREFIX}",
        "worker": {
            "cpu": settings.worker.cpu, "memory": settings.worker.memory,
            "timeout_seconds": max(1, round(settings.worker.timeout_minutes * 60)),
            "cluster": topology.names.maintenance_cluster,
            "task_family": topology.names.maintenance_task_family, "container": WORKER_CONTAINER,
        },
    }
