"""`rdsbackup maintain`: the backup-account session's worker job for one policy.

Production workers only append to the repository; everything that deletes runs here, in the backup
account (DESIGN.md, "Archive and the backup-account session"). The job spec is JSON in `$RDSBACKUP_JOB`
(docs/state-machine-contract.md, "The maintenance job"):

    {"session_id", "policy", "repository", "repository_kms_key_arn",
     "retention": {"keep_last", "keep_days", "min_age_seconds"},
     "archive": null | {"repository", "kms_key_arn", "storage_class", "after_days", "retention_days",
                        "gfs": {"weekly", "monthly", "yearly"}},
     "result_url"}

In this order:
1. archive (when `archive` is set): every restore point older than `after_days` that the archive does not
   hold yet is copied into it as a self-contained full (oldest first). Archiving is idempotent: a point
   archived by an earlier (or interrupted and retried) run is skipped. A point that fails to archive is
   reported and the others go on;
2. backup retention: `forget` by `retention` per source, except that with `archive` set a point the
   archive does not hold yet is never forgotten (retention never outruns archiving), nor a point younger
   than `min_age_seconds`, nor one of an older chain of its source (a database recreated under the same
   name: its old points are kept and reported in `warnings`, so SNS hears of it), then `prune` (its
   exclusive lock waits at most a few minutes for running backups; if they hold it, the prune is
   postponed to the next session with a warning);
3. archive retention: archived points older than `retention_days` are deleted whole, except those a GFS
   selection keeps and those under Object Lock; the early-deletion charge is reported.

The result document (at `result_url`): {"status": "ok" | "failed", "archived", "already_archived",
"archive_failures", "forgotten", "kept_for_archive", "prune", "archive_retention", "warnings", "error",
"error_type", "started", "ended", "duration_seconds"}. Exit code 0 when the result says ok and was written.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

from .errors import RdsBackupError, RepositoryLocked, RepositoryNotFound
from .worker_job import JOB_ENV, JobRun, JobSpecError, JsonLog, describe, load_spec, result_url_of, stop_on_sigterm

# How long prune waits for running backups before it is postponed to the next session.
PRUNE_LOCK_WAIT_SECONDS = 300.0


class ArchiveIncomplete(RdsBackupError):
    """One or more restore points due for the archive could not be archived."""


@dataclass(frozen=True)
class ArchiveSpec:
    repository: str
    kms_key_arn: str | None
    storage_class: str | None
    after_days: float
    retention_days: float | None
    gfs: dict


@dataclass(frozen=True)
class MaintenanceSpec:
    session_id: str
    policy: str
    repository: str
    repository_kms_key_arn: str | None
    keep_last: int | None
    keep_days: int | None
    min_age_seconds: float
    archive: ArchiveSpec | None
    result_url: str

    @classmethod
    def parse(cls, text: str | None) -> MaintenanceSpec:
        doc = load_spec(text, "maintenance job spec")

        def need(d: dict, name: str, where: str = "") -> str:
            value = d.get(name)
            if not isinstance(value, str) or not value:
                raise JobSpecError(f"maintenance spec: '{where}{name}' is required (a string)")
            return value

        def number(d: dict, name: str, where: str = "", *, required: bool = False, minimum: int = 1):
            value = d.get(name)
            if value is None and not required:
                return None
            if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
                raise JobSpecError(f"maintenance spec: '{where}{name}' must be a number >= {minimum}")
            return value

        retention = doc.get("retention") or {}
        archive = doc.get("archive")
        archive_spec = None
        if archive is not None:
            if not isinstance(archive, dict):
                raise JobSpecError("maintenance spec: 'archive' must be null or an object")
            gfs = archive.get("gfs") or {}
            archive_spec = ArchiveSpec(
                repository=need(archive, "repository", "archive."),
                kms_key_arn=archive.get("kms_key_arn") or None,
                storage_class=archive.get("storage_class") or None,
                after_days=number(archive, "after_days", "archive.", required=True, minimum=0),
                retention_days=number(archive, "retention_days", "archive."),
                gfs={k: number(gfs, k, "archive.gfs.") for k in ("weekly", "monthly", "yearly")},
            )
        result_url = need(doc, "result_url")
        if not result_url.startswith("s3://"):
            raise JobSpecError(f"maintenance spec: 'result_url' must be s3://bucket/key, not {result_url!r}")
        return cls(
            session_id=str(doc.get("session_id") or ""), policy=str(doc.get("policy") or ""),
            repository=need(doc, "repository"), repository_kms_key_arn=doc.get("repository_kms_key_arn") or None,
            keep_last=number(retention, "keep_last", "retention."),
            keep_days=number(retention, "keep_days", "retention."),
            min_age_seconds=number(retention, "min_age_seconds", "retention.", minimum=0) or 0,
            archive=archive_spec, result_url=result_url,
        )


def _open_archive(spec: ArchiveSpec, source):
    from .repository.archive import ArchiveRepository

    try:
        return ArchiveRepository.open_archive(spec.repository)
    except RepositoryNotFound:
        # Named with the backup repository's chunk-id key: blocks are copied without recompressing.
        return ArchiveRepository.init_archive(spec.repository, kms_key_id=spec.kms_key_arn,
                                              ids_of=source._keys)


def run_archive(repo, spec: ArchiveSpec, result: dict, log, *, now: float) -> set[str]:
    """Archive every point older than after_days not archived yet; returns the ids the archive holds."""
    from .repository.archive import archive_restore_point
    from .repository.repository import _parse_time

    archive = _open_archive(spec, repo)
    held = set(archive._manifest_ids())
    points = [p for p in repo.list_restore_points() if "error" not in p]
    due = [p for p in points if p["id"] not in held and now - _parse_time(p["time"]) > spec.after_days * 86400]
    for point in due:
        try:
            outcome = archive_restore_point(repo, archive, point["id"], storage_class=spec.storage_class)
        except Exception as exc:
            result["archive_failures"].append({"restore_point_id": point["id"], "error": describe(exc),
                                               "error_type": type(exc).__name__})
            log("archive failed", level="ERROR", restore_point_id=point["id"], error=describe(exc))
            continue
        if outcome.get("archived"):
            result["archived"].append({k: outcome[k] for k in ("restore_point_id", "packs", "stored_bytes",
                                                                 "storage_class", "duration_seconds")})
            held.add(point["id"])
            log("archived", restore_point_id=point["id"], stored_bytes=outcome["stored_bytes"])
        else:
            result["already_archived"].append(point["id"])
            held.add(point["id"])
    result["_archive"] = archive
    return held


def run_retention(repo, spec: MaintenanceSpec, result: dict, log, held: set[str] | None) -> None:
    if spec.keep_last is None and spec.keep_days is None:
        result["warnings"].append("no retention in the spec: nothing forgotten")
        return
    keep_ids: set[str] = set()
    if held is not None:
        # Retention never outruns archiving: a point the archive does not hold yet stays.
        keep_ids = {p["id"] for p in repo.list_restore_points() if "error" not in p} - held
    from .repository.repository import old_chains

    for source, chains in sorted(old_chains(repo.list_restore_points()).items()):
        for resource_id, ids in sorted(chains.items()):
            result["warnings"].append(
                f"source {source} was recreated (its restore points since are of another database than resource "
                f"{resource_id}): the {len(ids)} restore point(s) of the old database are kept outside retention; "
                f"forget them by hand (rdsbackup forget) once they are no longer needed")
    forgotten = repo.forget(keep_last=spec.keep_last, keep_days=spec.keep_days, keep_ids=keep_ids,
                            min_age_seconds=spec.min_age_seconds)
    result["forgotten"] = forgotten
    would_forget_now = repo_forget_preview(repo, spec, keep_ids)
    result["kept_for_archive"] = sorted(would_forget_now & keep_ids)
    log("forget done", forgotten=forgotten, kept_for_archive=result["kept_for_archive"])
    try:
        result["prune"] = repo.prune(lock_wait=PRUNE_LOCK_WAIT_SECONDS)
        log("prune done", prune=result["prune"])
    except RepositoryLocked as exc:
        result["warnings"].append(f"prune postponed to the next session (backups hold the repository): {describe(exc)}")


def repo_forget_preview(repo, spec: MaintenanceSpec, keep_ids: set[str]) -> set[str]:
    """Ids still in the repository that retention alone would have removed (i.e. kept for the archive)."""
    from .repository.repository import _parse_time, current_chains

    now = time.time()
    out = set()
    for rps in current_chains(repo.list_restore_points()).values():
        for n, rp in enumerate(reversed(rps)):
            age = now - _parse_time(rp["time"])
            keep = (spec.keep_last is not None and n < spec.keep_last) or (
                spec.keep_days is not None and age <= spec.keep_days * 86400) or age < spec.min_age_seconds
            if not keep and rp["id"] in keep_ids:
                out.add(rp["id"])
    return out


def run_archive_retention(archive, spec: ArchiveSpec, result: dict, log, *, now: float) -> None:
    from .repository.archive import forget_archived
    from .repository.gfs import gfs_keep

    if spec.retention_days is None:
        return
    keep = None
    if any(spec.gfs.values()):
        def keep(points):
            return gfs_keep(points, **spec.gfs)
    outcome = forget_archived(archive, retention_days=spec.retention_days, keep=keep, now=now)
    result["archive_retention"] = outcome
    if outcome["early_deletion_charge_usd"]:
        result["warnings"].append(
            f"archived points deleted before their storage class's minimum duration: early-deletion charge "
            f"about ${outcome['early_deletion_charge_usd']:.2f} (list price)")
    for item in outcome["locked"]:
        result["warnings"].append(f"archived point {item['restore_point_id']} is past retention but under "
                                  f"Object Lock until {item['retain_until']}: kept")
    log("archive retention done", deleted=outcome["deleted"], locked=len(outcome["locked"]))


def run_maintenance(spec_text: str | None, *, log: JsonLog | None = None, now: float | None = None) -> tuple[dict, int]:
    """Run the maintenance job; returns (result document, exit code)."""
    run = JobRun({"status": "failed", "archived": [], "already_archived": [], "archive_failures": [],
                  "forgotten": [], "kept_for_archive": [], "prune": None, "archive_retention": None,
                  "warnings": [], "error": None, "error_type": None}, log)
    log, result = run.log, run.result
    spec = None
    with run.failure_recorded("maintenance failed"):
        spec = MaintenanceSpec.parse(spec_text)
        log.context = {"session_id": spec.session_id, "policy": spec.policy}
        result.update(session_id=spec.session_id, policy=spec.policy)
        log("job started", job="maintenance", repository=spec.repository,
            archive=spec.archive.repository if spec.archive else None)
        from .repository import Repository

        try:
            repo = Repository.open(spec.repository)
        except RepositoryNotFound:
            result["warnings"].append(f"no repository at {spec.repository} yet: nothing to do")
            repo = None
        now = time.time() if now is None else now
        if repo is not None:
            held = None
            if spec.archive is not None:
                held = run_archive(repo, spec.archive, result, log, now=now)
            run_retention(repo, spec, result, log, held)
            if spec.archive is not None:
                run_archive_retention(result["_archive"], spec.archive, result, log, now=now)
        if result["archive_failures"]:
            first = result["archive_failures"][0]
            raise ArchiveIncomplete(f"{len(result['archive_failures'])} restore point(s) could not be archived "
                                    f"(kept in the backup repository); first: {first['restore_point_id']}: "
                                    f"{first['error']}")
        result["status"] = "ok"
    result.pop("_archive", None)
    return run.finish(spec.result_url if spec else result_url_of(spec_text), "maintenance finished",
                      status=result["status"], archived=len(result["archived"]), forgotten=len(result["forgotten"]))


class MaintenanceStopped(RdsBackupError):
    """SIGTERM (ECS stop_task, the session's timeout) arrived: the copy in progress deletes what it wrote."""


def main(environ: dict | None = None) -> int:
    """`rdsbackup maintain`: exit 0 only when the session's work is done and its result written."""
    env = os.environ if environ is None else environ
    stop_on_sigterm(MaintenanceStopped, "the session")
    result, code = run_maintenance(env.get(JOB_ENV))
    if code != 0 and result.get("error"):
        print(f"rdsbackup: error: {result['error']}", file=sys.stderr)
    return code
