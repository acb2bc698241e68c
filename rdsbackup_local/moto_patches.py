"""Small, documented patches that make moto behave like AWS where our code depends on it.

``shared_snapshot_copies``: in moto 5.2.5, ``copy_db_snapshot`` / ``copy_db_cluster_snapshot`` with
the ARN of a snapshot that *another account* shared with the caller fails with ``DBSnapshotNotFound``
(``DBClusterSnapshotNotFoundFault``): ``RDSBackend.get_snapshot`` looks the ARN's region up in the
*caller's* account only. AWS resolves such an ARN in the owning account and allows the copy when the
snapshot's ``restore`` attribute lists the caller's account (or ``all``). The patch does exactly that,
and otherwise keeps moto's behaviour (an unshared snapshot of another account is still not found).

Use it as a context manager around a test (``with shared_snapshot_copies(): ...``), or call
:func:`install` once in a process that runs moto's server (the local demo); :func:`uninstall` undoes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from moto.rds import models as rds_models

_original_get_snapshot = rds_models.RDSBackend.get_snapshot
_installed = False


def _get_snapshot(self: Any, identifier: str, resource_type: type, not_found_exception: type) -> Any:
    if identifier.startswith("arn:"):
        region, account, _kind, name = rds_models.split_arn(identifier)
        if account != self.account_id:
            owner = rds_models.rds_backends[account][region]
            snapshot = owner.resource_map[resource_type].get(name)
            shared_with = set(snapshot.attributes.get("restore", [])) if snapshot is not None else set()
            if snapshot is None or not ({self.account_id, "all"} & shared_with):
                raise not_found_exception(identifier)
            return snapshot
    return _original_get_snapshot(self, identifier, resource_type, not_found_exception)


def install() -> None:
    """Teach moto to resolve shared snapshot ARNs of other accounts (idempotent)."""
    global _installed
    rds_models.RDSBackend.get_snapshot = _get_snapshot  # type: ignore[method-assign]
    _installed = True


def uninstall() -> None:
    """Restore moto's own behaviour."""
    global _installed
    rds_models.RDSBackend.get_snapshot = _original_get_snapshot  # type: ignore[method-assign]
    _installed = False


@contextmanager
def shared_snapshot_copies() -> Iterator[None]:
    """Within the block, cross-account copies of shared snapshots by ARN work as in AWS."""
    was_installed = _installed
    install()
    try:
        yield
    finally:
        if not was_installed:
            uninstall()
