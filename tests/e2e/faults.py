"""Faults injected into moto's RDS backend, to drive the state machine down its error paths.

moto makes snapshots available at once and never hits a quota; AWS does both. These wrappers make a
chosen call fail (with the error AWS returns) or make a snapshot report `creating` for a while.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from moto.ec2 import exceptions as ec2_errors
from moto.rds import exceptions as rds_errors
from moto.rds import models as rds_models


@contextlib.contextmanager
def failing_method(cls: type, method: str, error: Callable[[], Exception], *, times: int | None = None,
                   when: Callable[[tuple, dict], bool] = lambda args, kwargs: True) -> Iterator[dict]:
    """Make `cls.<method>` raise `error()` (the first `times` matching calls, or always)."""
    original = getattr(cls, method)
    state = {"raised": 0, "calls": 0}
    lock = threading.Lock()

    def wrapper(self, *args, **kwargs):
        with lock:
            state["calls"] += 1
            if when(args, kwargs) and (times is None or state["raised"] < times):
                state["raised"] += 1
                raise error()
        return original(self, *args, **kwargs)

    setattr(cls, method, wrapper)
    try:
        yield state
    finally:
        setattr(cls, method, original)


def failing(method: str, error: Callable[[], Exception], *, times: int | None = None,
            when: Callable[[dict], bool] = lambda kwargs: True):
    """Make `RDSBackend.<method>` raise `error()` (the first `times` calls that match, or always)."""
    return failing_method(rds_models.RDSBackend, method, error, times=times,
                          when=lambda args, kwargs: when(kwargs))


def security_group_limit() -> Exception:
    return ec2_errors.RulesPerSecurityGroupLimitExceededError()


def dependency_violation() -> Exception:
    return ec2_errors.DependencyViolationError("resource sg-... has a dependent object (a worker ENI)")


def quota_exceeded() -> Exception:
    return rds_errors.SnapshotQuotaExceededFault()


def invalid_state() -> Exception:
    return rds_errors.InvalidDBInstanceStateFault("Instance broken-db is not in available state (modifying).")


@contextlib.contextmanager
def slow_snapshots(describes_before_available: int) -> Iterator[None]:
    """Snapshots report `creating` for the first N describe calls of each, as AWS's take minutes."""
    original = rds_models.RDSBackend.describe_db_snapshots
    seen: dict[str, int] = {}

    def wrapper(self, *args, **kwargs):
        snapshots = original(self, *args, **kwargs)
        for snapshot in snapshots:
            count = seen.get(snapshot.db_snapshot_identifier, 0)
            seen[snapshot.db_snapshot_identifier] = count + 1
            snapshot.status = "creating" if count < describes_before_available else "available"
        return snapshots

    rds_models.RDSBackend.describe_db_snapshots = wrapper
    try:
        yield
    finally:
        rds_models.RDSBackend.describe_db_snapshots = original


@contextlib.contextmanager
def slow_databases(describes_before_available: int) -> Iterator[None]:
    """DB instances and clusters made (or renamed) inside the block report `creating` for the first N describe
    calls of each, as AWS's take minutes; moto makes them available at once. Those that existed before are
    left alone."""
    instances, clusters = rds_models.RDSBackend.describe_db_instances, rds_models.RDSBackend.describe_db_clusters
    existing = {(backend.account_id, backend.region_name, name)
                for regions in rds_models.rds_backends.values() for backend in regions.values()
                for name in (*backend.databases, *backend.clusters)}
    seen: dict[tuple[str, str, str], int] = {}
    lock = threading.Lock()

    def slowed(original, identifier_of):
        def wrapper(self, *args, **kwargs):
            found = original(self, *args, **kwargs)
            with lock:
                for resource in found:
                    key = (self.account_id, self.region_name, identifier_of(resource))
                    if key in existing:
                        continue
                    count = seen.get(key, 0)
                    seen[key] = count + 1
                    resource.status = "creating" if count < describes_before_available else "available"
            return found
        return wrapper

    rds_models.RDSBackend.describe_db_instances = slowed(instances, lambda r: r.db_instance_identifier)
    rds_models.RDSBackend.describe_db_clusters = slowed(clusters, lambda r: r.db_cluster_identifier)
    try:
        yield
    finally:
        rds_models.RDSBackend.describe_db_instances = instances
        rds_models.RDSBackend.describe_db_clusters = clusters
