"""`rdsbackup job` for a restore test (job spec `"kind": "restore_test"`), run by the test worker.

The restore-test workflow restores the newest snapshot (or replica) of a source into a throwaway
instance that admits only this worker, then starts it with:

    {"kind": "restore_test", "session_id", "resource_arn" (the throwaway), "source_id", "engine": "postgres",
     "host", "port", "secret_arn", "repository", "restore_point_id": null | "<id>",
     "compare_restore_point_id": null | "<id>", "check_snapshot": true, "result_url"}

With `check_snapshot` it checks the restored snapshot (`postgres.validate.check_server`: the engine
answers, the databases the restore point recorded exist, `bt_index_check` on every index where
amcheck is allowed, row counts beside the restore point's: `compare_restore_point_id`, by default
`restore_point_id`; a snapshot-only policy's test names the newest restore point another policy made of
the same source, or none). With `restore_point_id` it restores that
restore point (from a backup repository, or from an archive repository once the workflow has had its
packs retrieved: `targets: archived_restore_point`) into the same throwaway server under
`rdsbackup_test_<database>` names and compares every table with the row counts and digests the restore
point recorded. The result document:

    {"status": "ok" | "failed", "test": {"passed": bool, "failures": ["<why>", ...],
     "snapshot": {...} | null, "restore_point": {...} | null, "restore_seconds": 12.3},
     "error", "error_type", "warnings", "duration_seconds", "started", "ended", ...}

SQL Server (`"engine": "sqlserver"`, `sqlserver/validate.py`): the snapshot's databases (the restore
point's, else every user database) there, ONLINE and passing `DBCC CHECKDB`; a restore point's `.bak`s
(read from the backup repository, or from the archive repository once retrieved) restored through
`rds_restore_database` (`"sqlserver": {"temp_bucket", "temp_prefix"}` stages them) under
`rdsbackup_test_<name>`, each restore task polled to SUCCESS, each restored database ONLINE and passing
`DBCC CHECKDB` (a SQL Server restore point records no row counts or digests).

`status` is "ok" when the test ran to its verdict (passed or not) and "failed" when it could not run
(credentials, connection, repository); exit code 0 only for "ok" with the result written.
"""

from __future__ import annotations

import contextlib
import time

from .job import read_credentials, tls_settings
from .worker_job import JobRun, JobSpecError, JsonLog, run_request, spec_text

TEST_DATABASE_PREFIX = "rdsbackup_test_"


def _text(doc: dict, name: str, *, required: bool = True) -> str | None:
    return spec_text(doc, name, "restore test job spec", required=required)


def scratch_database_name(name: str) -> str:
    """Where a recorded database is restored on the throwaway server (beside the snapshot's own copy)."""
    return (TEST_DATABASE_PREFIX + name)[:63]


def _run(doc: dict, run: JobRun) -> dict:
    from .restore_job import open_restorable

    engine = doc.get("engine")
    if engine not in ("postgres", "sqlserver"):
        raise JobSpecError(f"restore tests validate PostgreSQL and SQL Server; engine {engine!r} is not supported")
    rp_id = _text(doc, "restore_point_id", required=False)
    # the restore point whose databases and row counts the snapshot is checked against (by default the
    # one restored; a snapshot-only policy's test names another policy's newest of the same source)
    compare_id = _text(doc, "compare_restore_point_id", required=False) or rp_id
    if rp_id and compare_id != rp_id:
        raise JobSpecError("restore test job spec: 'compare_restore_point_id' must be the restored "
                           "'restore_point_id' when both are given")
    repository = _text(doc, "repository", required=compare_id is not None)
    creds = read_credentials(_text(doc, "secret_arn"))
    run.secret = creds["password"]  # kept out of any error text
    ssl_mode, bundle = tls_settings(run.warnings)
    user = creds.get("username") or creds.get("user")
    if engine == "postgres":
        from .postgres import ConnectionInfo

        info = ConnectionInfo(host=_text(doc, "host"), port=int(doc.get("port") or 5432), user=user,
                              password=creds["password"], ssl_mode=ssl_mode, ca_bundle=bundle or "")
    else:
        from .sqlserver import SqlServerInfo

        info = SqlServerInfo(host=_text(doc, "host"), port=int(doc.get("port") or 1433), user=user,
                             password=creds["password"], ca_bundle=bundle or "")
    # an archived point (the workflow has had its packs retrieved) is read through its own view
    repo = open_restorable(repository, compare_id or "") if repository else None
    with contextlib.ExitStack() as held:
        if repo is not None and compare_id:
            # A shared lock from the manifest read to the last comparison: no prune repacks the restore
            # point's data away (nor forgets it) while the test reads it.
            held.enter_context(repo.shared_lock("restore", f"restore test of {compare_id} ({doc.get('session_id')})"))
        check = _test if engine == "postgres" else _test_sqlserver
        return check(doc, info, repo, rp_id, compare_id, run.log)


def _test(doc: dict, info, repo, rp_id: str | None, compare_id: str | None, log) -> dict:
    from .postgres import restore_postgres
    from .postgres.restore import restore_point_metadata
    from .postgres.validate import check_server, validate_restore_point

    recorded = restore_point_metadata(repo.load_manifest(compare_id)) if repo and compare_id else None
    test: dict = {"passed": False, "failures": [], "snapshot": None, "restore_point": None, "restore_seconds": None}
    if doc.get("check_snapshot", True):
        # the databases the restore point recorded must be there; without one, every database is checked
        snapshot = check_server(info, recorded=recorded,
                                databases=[e["name"] for e in (recorded or {}).get("databases") or []] or None)
        test["snapshot"] = snapshot
        test["failures"] += [f"snapshot: {problem}" for problem in snapshot["problems"]]
        log("snapshot checked", status=snapshot["status"], problems=snapshot["problems"])
    if rp_id:
        assert repo is not None and recorded is not None
        checked = []
        t0 = time.monotonic()
        for entry in recorded.get("databases") or []:
            target = scratch_database_name(entry["name"])
            restore_postgres(repo, rp_id, info, database=entry["name"], target_database=target, replace=True)
        test["restore_seconds"] = round(time.monotonic() - t0, 3)
        log("restore point restored", restore_point_id=rp_id, seconds=test["restore_seconds"])
        for entry in recorded.get("databases") or []:
            result = validate_restore_point(repo, rp_id, info, database=entry["name"],
                                            target_database=scratch_database_name(entry["name"]))
            checked.append(result)
            test["failures"] += [
                f"restore point {rp_id}: database {entry['name']}"
                + (f", table {d['table']}" if d["table"] else "") + f": {d['reason']}"
                for d in result["differences"]]
        test["restore_point"] = {"restore_point_id": rp_id, "databases": checked,
                                 "tables_checked": sum(r["tables_checked"] for r in checked),
                                 "row_counts_only": any(r["row_counts_only"] for r in checked)}
    test["passed"] = not test["failures"]
    return test


def _test_sqlserver(doc: dict, info, repo, rp_id: str | None, compare_id: str | None, log) -> dict:
    """SQL Server (sqlserver/validate.py): the databases there and ONLINE, DBCC CHECKDB on each; a restore point
    restored through RDS native restore (its task must end SUCCESS), its databases checked the same way."""
    from .sqlserver import PollPolicy
    from .sqlserver.connection import factory_from_env
    from .sqlserver.validate import check_server, validate_restore_point

    connect = factory_from_env()
    recorded = repo.load_manifest(compare_id) if repo and compare_id else None
    test: dict = {"passed": False, "failures": [], "snapshot": None, "restore_point": None, "restore_seconds": None}
    if doc.get("check_snapshot", True):
        snapshot = check_server(info, recorded=recorded, connect=connect)
        test["snapshot"] = snapshot
        test["failures"] += [f"snapshot: {problem}" for problem in snapshot["problems"]]
        log("snapshot checked", status=snapshot["status"], problems=snapshot["problems"])
    if rp_id:
        sqlserver = doc.get("sqlserver") or {}
        if not sqlserver.get("temp_bucket"):
            raise JobSpecError("restore test job spec: restoring a SQL Server restore point needs "
                               "'sqlserver': {'temp_bucket', 'temp_prefix'} (RDS restores a .bak from S3)")
        t0 = time.monotonic()
        result = validate_restore_point(repo, rp_id, info, target_of=scratch_database_name,
                                        temp_bucket=sqlserver["temp_bucket"],
                                        temp_prefix=sqlserver.get("temp_prefix") or "", connect=connect,
                                        poll=PollPolicy.from_env())
        test["restore_seconds"] = round(time.monotonic() - t0, 3)
        log("restore point restored", restore_point_id=rp_id, seconds=test["restore_seconds"])
        test["failures"] += [f"restore point {rp_id}: {d['reason']}" for d in result["differences"]]
        test["restore_point"] = {"restore_point_id": rp_id, "databases": [result], "tables_checked": 0,
                                 "row_counts_only": False}
    test["passed"] = not test["failures"]
    return test


def run_restore_test(doc: dict, *, log: JsonLog | None = None) -> tuple[dict, int]:
    """Run the test; returns (result document, exit code) after writing the result to `result_url`."""
    return run_request(doc, "restore_test", "restore test", "test", _run, log=log, failed="restore test could not run",
                       summary=lambda test: {"passed": (test or {}).get("passed"),
                                             "failures": (test or {}).get("failures")})
