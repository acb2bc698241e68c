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

import time

from .job import JobSpecError, JsonLog, describe, read_credentials, tls_settings, utcnow, write_result


def _text(doc: dict, name: str, *, required: bool = True) -> str | None:
    value = doc.get(name)
    if value in (None, ""):
        if required:
            raise JobSpecError(f"restore job spec: '{name}' is required")
        return None
    if not isinstance(value, str):
        raise JobSpecError(f"restore job spec: '{name}' must be a string")
    return value


def _run(doc: dict, warnings: list[str], log, secret: dict) -> dict:
    from .repository import Repository

    engine = _text(doc, "engine")
    rp_id = _text(doc, "restore_point_id")
    databases = doc.get("databases") or [None]
    target_database = _text(doc, "target_database", required=False)
    if target_database and len(databases) != 1:
        raise JobSpecError("restore job spec: 'target_database' needs exactly one database")
    creds = read_credentials(_text(doc, "secret_arn"))
    secret["password"] = creds["password"]  # kept out of any error text
    ssl_mode, bundle = tls_settings(warnings)
    user = creds.get("username") or creds.get("user")
    repo = Repository.open(_text(doc, "repository"))
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
    log = log or JsonLog()
    t0 = time.monotonic()
    result: dict = {"kind": "restore", "status": "failed", "restored": None, "error": None, "error_type": None,
                    "warnings": [], "started": utcnow(), "session_id": doc.get("session_id"),
                    "resource_arn": doc.get("resource_arn"), "source_id": doc.get("source_id"),
                    "restore_point_id": doc.get("restore_point_id")}
    log.context = {"session_id": doc.get("session_id"), "source_id": doc.get("source_id"), "kind": "restore"}
    secret: dict = {}
    try:
        log("restore started", host=doc.get("host"), restore_point_id=doc.get("restore_point_id"))
        result["restored"] = _run(doc, result["warnings"], log, secret)
        result["status"] = "ok"
    except Exception as exc:
        result.update(error=describe(exc, secret.get("password")), error_type=type(exc).__name__)
        log("restore failed", level="ERROR", error=result["error"], error_type=result["error_type"])
    result.update(duration_seconds=round(time.monotonic() - t0, 3), ended=utcnow())
    url = doc.get("result_url") if str(doc.get("result_url") or "").startswith("s3://") else None
    if not url:
        log("no result_url to write the result to", level="ERROR")
        return result, 1
    try:
        write_result(url, result)
    except Exception as exc:
        log("result not written", level="ERROR", error=describe(exc))
        return result, 1
    log("restore finished", status=result["status"], restored=result["restored"])
    return result, 0 if result["status"] == "ok" else 1
