"""The retrieval of an archived restore point's packs before a database-level restore (docs/restore.md).

The archive repository (``rdsbackup archive``) keeps its packs in GLACIER or DEEP_ARCHIVE; a worker can
read them only once S3 has made a temporary copy (RestoreObject). ``request`` opens the archive (index,
manifests and keys stay STANDARD), reads which packs the restore point's manifest lists, and asks S3 to
retrieve those not retrieved yet (the tier of the restore input); ``check`` follows them in the
workflow's Wait/Choice loop until every one is readable, up to ``archive.retrieval_timeout_hours``.

The restore-test workflow runs the same loop before it tests an archived point
(``restore_test.targets: archived_restore_point``): ``newest_archived_points`` finds the point, and
``retrieval_for`` makes ``$.retrieval`` for both planners.

The repository code is the worker's own (``rdsbackup.repository``, bundled with the Lambda asset), so
the manifest is read exactly as a restore reads it. Retrieval states come from a listing with the
RestoreStatus attribute: this function may list the archive and read its keys and manifests, never
read a pack.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict

from rdsbackup_lambdas.errors import ArchiveRetrievalFailed, ArchiveRetrievalTimedOut
from rdsbackup_lambdas.models import PollState, WaitSettings
from rdsbackup_lambdas.observability import logger
from rdsbackup_lambdas.polling import next_poll

DEFAULT_TIER = "Standard"
DEFAULT_DAYS = 3


class Retrieval(PollState):
    """``$.retrieval``: what the plan decided, extended by each request/check."""

    model_config = ConfigDict(extra="allow")

    repository: str
    restore_point_id: str
    storage_class: str
    tier: str = DEFAULT_TIER
    days: int = DEFAULT_DAYS
    timeout_hours: float
    wait: WaitSettings
    ready: bool = False
    packs: int = 0
    bytes: int = 0
    waiting: int = 0
    waiting_bytes: int = 0
    requested: int = 0


def retrieval_for(archive: dict[str, Any], restore_point_id: str, *, tier: str, days: int | None,
                  wait: WaitSettings) -> dict[str, Any]:
    """``$.retrieval`` for an archived point: where the archive is (``archive`` is the policy's
    ``maintenance.archive`` section), its packs' class, the tier and the loop's bound
    (``archive.retrieval_timeout_hours``, default 48: Deep Archive's Bulk tier takes up to 48 hours)."""
    hours = float(archive.get("retrieval_timeout_hours") or 48)
    bounded = wait.model_copy(update={"timeout_seconds": max(1, round(hours * 3600))})
    return {"repository": archive["repository"], "restore_point_id": restore_point_id,
            "storage_class": archive["storage_class"], "tier": tier, "days": days or DEFAULT_DAYS,
            "timeout_hours": hours, "wait": bounded.model_dump()}


def newest_archived_points(archive_url: str) -> dict[str, dict[str, Any]]:
    """Per source id, the newest readable restore point in the archive at `archive_url` (its manifest
    summary: id, time, ...); {} while the archive does not exist yet (nothing archived). Reads only the
    archive's config, keys and manifests (all STANDARD): no retrieval."""
    from rdsbackup.errors import RepositoryError, RepositoryNotFound
    from rdsbackup.repository.archive import ArchiveRepository

    try:
        points = ArchiveRepository.open_archive(archive_url).list_restore_points()
    except RepositoryNotFound:
        return {}
    except RepositoryError as exc:
        raise ArchiveRetrievalFailed(f"archive {archive_url}: {exc}") from exc
    newest: dict[str, dict[str, Any]] = {}
    for point in points:  # oldest first
        # a manifest that cannot be read, or a point marked damaged, is no candidate
        if point.get("source_id") and not point.get("error") and not point.get("damaged"):
            newest[point["source_id"]] = point
    return newest


def _pack_states(retrieval: Retrieval):
    from rdsbackup.errors import RepositoryError
    from rdsbackup.repository.archive import ArchiveRepository
    from rdsbackup.repository.retrieval import listed_states

    try:
        archive = ArchiveRepository.open_archive(retrieval.repository)
        packs = archive.record(retrieval.restore_point_id)["packs"]
        return archive.backend, listed_states(archive.backend, packs)
    except RepositoryError as exc:
        raise ArchiveRetrievalFailed(f"restore point {retrieval.restore_point_id} in archive "
                                     f"{retrieval.repository}: {exc}") from exc


def poll(retrieval: Retrieval, *, first: bool) -> dict[str, Any]:
    """Ask for the retrieval of every pack not retrieved (or expired) yet; ready when all are readable.
    A check past the bound raises ArchiveRetrievalTimedOut naming how many packs (and bytes) still wait."""
    from rdsbackup.errors import RepositoryError
    from rdsbackup.repository.retrieval import READY, request_retrieval

    backend, states = _pack_states(retrieval)
    try:
        requested = request_retrieval(backend, states, tier=retrieval.tier, days=retrieval.days)
    except RepositoryError as exc:
        raise ArchiveRetrievalFailed(f"restore point {retrieval.restore_point_id}: {exc}") from exc
    waiting = [s for s in states if s.state != READY]
    counts = {"packs": len(states), "bytes": sum(s.size for s in states), "waiting": len(waiting),
              "waiting_bytes": sum(s.size for s in waiting), "requested": retrieval.requested + requested}
    what = (f"the retrieval of restore point {retrieval.restore_point_id} from {retrieval.storage_class} "
            f"({counts['waiting']} of {counts['packs']} packs, {counts['waiting_bytes']} bytes, tier "
            f"{retrieval.tier}; archive.retrieval_timeout_hours = {retrieval.timeout_hours:g})")
    # the request is followed by a check at once; the checks' loop counts the waits
    timing = {"attempt": 0, "wait_seconds": 0, "waited_seconds": 0} if first else next_poll(
        retrieval, retrieval.wait, ready=not waiting, timeout_error=ArchiveRetrievalTimedOut, what=what)
    logger.info("archive retrieval", extra={**counts, "requested_now": requested, "ready": not waiting})
    return {**retrieval.model_dump(), **counts, **timing, "ready": not waiting}
