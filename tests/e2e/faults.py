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
