"""`rdsbackup job` for a database-level restore (job spec `"kind": "restore"`), run by the temporary
worker the restore state machine starts in the target's account and region:

    {"kind": "restore", "session_id", "resource_arn" (the target DB), "source_id", "engine", "host", "port",
     "secret_arn", "repository", "restore_point_id", "databases": null | ["<name>", ...],
     "target_database": null | "<name>", "replace": false, "include_globals": false, "result_url",
     "sqlserver": null | {"temp_bucket", "temp_prefix"}}

PostgreSQL: `restore_postgres` per database (all of the restore point's when `databases` is null);
SQL Server: `restore_sqlserver` through the temporary bucket. The credentials come from the target's
secret and TLS is verified as for a backup. The result document:

    {"kind": "restore", "status": "ok" | "failed", "restored": {"databases": [...], "warnings": [...]},
     "error", "error_type", "warnings", "duration_seconds", "started", "ended", ...}

Exit code 0 only for "ok" with the result written.
"""

from __future__ import annotations

from .job import read_credentials, tls_settings
from .worker_job import JobRun, JobSpecError, JsonLog, run_request, spec_text


def _text(doc: dict, name: str, *, required: bool = True) -> str | None:
    return spec_text(doc, name, "restore job spec", required=required)


def open_restorable(url: str, rp_id: str):
    """The repository to restore `rp_id` from: a backup repository, or an archived point's own view once
    the restore workflow has had its packs retrieved (a pack still in Glacier fails here, named)."""
    from .errors import RepositoryError
    from .repository.archive import ArchiveRepository, open_any
    from .repository.retrieval import READY

    repo = open_any(url)
    if not isinstance(repo, ArchiveRepository):
        return repo
    view = repo.for_point(rp_id)
    waiting = [s for s in view.pack_states(rp_id) if s.state != READY]
    if waiting:
        raise RepositoryError(f"restore point {rp_id} of archive {url}: {len(waiting)} packs are not retrieved "
                              f"from {waiting[0].storage_class} yet (first: {waiting[0].key})")
    return view


def _run(doc: dict, run: JobRun) -> dict:
    engine = _text(doc, "engine")
    rp_id = _text(doc, "restore_point_id")
    databases = doc.get("databases") or [None]
    target_database = _text(doc, "target_database", required=False)
    if target_database and len(databases) != 1:
        raise JobSpecError("restore job spec: 'target_database' needs exactly one database")
    creds = read_credentials(_text(doc, "secret_arn"))
    run.secret = creds["password"]  # kept out of any error text
    warnings, log = run.warnings, run.log
    ssl_mode, bundle = tls_settings(warnings)
    user = creds.get("username") or creds.get("user")
    repo = open_restorable(_text(doc, "repository"), rp_id)
    restored: list[dict] = []
    with repo.shared_lock("restore", f"restore of {rp_id} ({doc.get('session_id')})"):
        for database in databases:
            log("restoring", restore_point_id=rp_id, database=database, target_database=target_database)
            if engine == "postgres":
                from .postgres import ConnectionInfo, restore_postgres

                info = ConnectionInfo(host=_text(doc, "host"), port=int(doc.get("port") or 5432), user=user,
                                      password=creds["password"], ssl_mode=ssl_mode, ca_bundle=bundle or "")
                summary = restore_postgres(repo, rp_id, info, database=database, target_database=target_database,
                                           include_globals=bool(doc.get("include_globals")),
                                           replace=bool(doc.get("replace")))
            elif engine == "sqlserver":
                from .sqlserver import PollPolicy, SqlServerInfo, restore_sqlserver
                from .sqlserver.connection import factory_from_env

                sqlserver = doc.get("sqlserver") or {}
                info = SqlServerInfo(host=_text(doc, "host"), port=int(doc.get("port") or 1433), user=user,
                                     password=creds["password"], ca_bundle=bundle or "")
                summary = restore_sqlserver(repo, rp_id, info, temp_bucket=_text(sqlserver, "temp_bucket"),
                                            temp_prefix=sqlserver.get("temp_prefix") or "", database=database,
                                            target_database=target_database, replace=bool(doc.get("replace")),
                                            connect=factory_from_env(), poll=PollPolicy.from_env())
            else:
                raise JobSpecError(f"restore job spec: engine {engine!r} has no database-level restore")
            warnings.extend(summary.get("warnings") or [])
            restored += summary.get("databases") or []
    return {"databases": [{k: v for k, v in d.items() if k in ("name", "target", "tables", "rows", "replaced")}
                          for d in restored]}


def run_restore(doc: dict, *, log: JsonLog | None = None) -> tuple[dict, int]:
    """Run the restore; returns (result document, exit code) after writing the result to `result_url`."""
    return run_request(doc, "restore", "restore", "restored", _run, log=log, failed="restore failed",
                       summary=lambda restored: {"restored": restored})
