"""Validation of a restored PostgreSQL server, as a restore test runs it.

Two checks, both read-only:

- `validate_restore_point`: every table a restore point recorded is recounted and its digest recomputed
  (`table_digest`) from the restored database under the same pinned session settings and time zone;
  every table that is missing, has another row count or another digest is named. Restore points
  written before digests were recorded are checked by row count alone (said in the result).
- `check_server`: the engine answers, every expected database is there, and where the `amcheck`
  extension can be used, `bt_index_check` passes on every valid B-tree index; row counts can be
  compared with those of a restore point of the same source (a snapshot is of another moment, so
  those differences are reported, not failed).
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from .backup import copy_out_sql
from .catalog import TableInfo, quote_ident
from .connection import ConnectionInfo, connect_maintenance, one_line
from .errors import DatabaseNotFound, PostgresError
from .restore import restore_point_metadata
from .settings import data_session_settings
from .table_digest import TableDigest, digest_kind


def _table_sql(table: dict) -> str:
    info = TableInfo(oid=0, schema=table["schema"], name=table["name"], columns=list(table["columns"]),
                     key=list(table.get("key") or []), key_order=list(table.get("key_order") or []),
                     condition=table.get("condition"))
    return copy_out_sql(info, key_order=table.get("order") == "primary-key")


def _recompute(conn: psycopg.Connection, table: dict) -> tuple[int, str]:
    recorded = table.get("digest") or ""
    digest = TableDigest(ordered=bool(table.get("key")), kind=digest_kind(recorded) if recorded else None)
    rows = 0
    with conn.cursor() as cur, cur.copy(_table_sql(table)) as copy:
        for block in copy:
            data = bytes(block)
            digest.update(data)
            rows += data.count(b"\n")
    return rows, digest.value


def validate_database(info: ConnectionInfo, entry: dict, dbname: str) -> dict:
    """Recount and re-digest every table of one recorded database in `dbname`; its differences."""
    # as the backup read them: pinned settings, its time zone, and an error rather than a policy-filtered subset
    settings = {**data_session_settings(entry.get("encoding") or "UTF8"), "row_security": "off"}
    if entry.get("time_zone"):
        settings["TimeZone"] = entry["time_zone"]
    differences: list[dict] = []
    checked = 0
    conn = info.connect(dbname, autocommit=False, settings=settings)
    try:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        for table in entry.get("tables") or []:
            label = f"{table['schema']}.{table['name']}"
            where = {"database": dbname, "table": label}
            try:
                rows, digest = _recompute(conn, table)
            except psycopg.Error as exc:
                conn.rollback()
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                differences.append({**where, "reason": f"cannot be read: {one_line(str(exc))}"})
                continue
            checked += 1
            if rows != table.get("rows"):
                differences.append({**where, "reason": f"{rows} rows, the restore point recorded {table.get('rows')}"})
            elif table.get("digest") and digest != table["digest"]:
                differences.append({**where, "reason": "same row count, different data (digest differs)"})
    finally:
        conn.close()
    return {"database": dbname, "tables_checked": checked, "differences": differences,
            "digests": all(t.get("digest") for t in entry.get("tables") or [])}


def validate_restore_point(repo, restore_point_id: str, info: ConnectionInfo, *, database: str | None = None,
                           target_database: str | None = None) -> dict:
    """Compare a restored server with what restore point `restore_point_id` recorded.

    `database` picks one recorded database; `target_database` is the name it was restored under.
    """
    meta = restore_point_metadata(repo.load_manifest(restore_point_id))
    entries = [e for e in meta.get("databases") or [] if database is None or e["name"] == database]
    if database is not None and not entries:
        raise PostgresError(f"restore point {restore_point_id} has no database {database!r}")
    results = []
    for entry in entries:
        dbname = target_database or entry["name"]
        try:
            results.append(validate_database(info, entry, dbname))
        except DatabaseNotFound:
            results.append({"database": dbname, "tables_checked": 0, "digests": False,
                            "differences": [{"database": dbname, "table": None, "reason": "database is missing"}]})
    differences = [d for r in results for d in r["differences"]]
    return {"restore_point_id": restore_point_id, "status": "failed" if differences else "passed",
            "databases": results, "differences": differences,
            "tables_checked": sum(r["tables_checked"] for r in results),
            "row_counts_only": not all(r["digests"] for r in results)}


_BTREE_INDEXES = """
SELECT c.oid, n.nspname, c.relname FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_am a ON a.oid = c.relam
WHERE a.amname = 'btree' AND c.relkind = 'i' AND i.indisvalid AND i.indisready AND c.relpersistence <> 't'
ORDER BY n.nspname, c.relname
"""


def _amcheck(conn: psycopg.Connection) -> dict:
    """`bt_index_check` on every valid B-tree index, where amcheck exists or may be created. An extension
    created for the check is dropped after it: the database is left as it was found."""
    created = False
    if not conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'amcheck'").fetchone():
        try:
            conn.execute("CREATE EXTENSION amcheck")
            created = True
        except psycopg.Error as exc:
            return {"ran": False, "reason": f"amcheck not available: {one_line(str(exc))}", "indexes": 0,
                    "failed": []}
    failed = []
    try:
        indexes = conn.execute(_BTREE_INDEXES).fetchall()
        for oid, schema, name in indexes:
            try:
                conn.execute("SELECT bt_index_check(%s::regclass)", (oid,))
            except psycopg.Error as exc:
                failed.append({"index": f"{schema}.{name}", "reason": one_line(str(exc))})
    finally:
        if created:
            conn.execute("DROP EXTENSION amcheck")
    return {"ran": True, "indexes": len(indexes), "failed": failed}


def _row_counts(conn: psycopg.Connection, tables: list[dict]) -> dict[str, int | None]:
    counts: dict[str, int | None] = {}
    for table in tables:
        label = f"{table['schema']}.{table['name']}"
        query = sql.SQL("SELECT count(*) FROM ONLY {}").format(
            sql.SQL(f"{quote_ident(table['schema'])}.{quote_ident(table['name'])}"))
        try:
            counts[label] = conn.execute(query).fetchone()[0]
        except psycopg.Error:
            counts[label] = None
    return counts


def check_server(info: ConnectionInfo, *, databases: list[str] | None = None, amcheck: bool = True,
                 recorded: dict | None = None) -> dict:
    """A restored snapshot's checks: engine answers, databases there, amcheck, row counts vs `recorded`.
    With `databases`, only those (and the recorded ones) are checked; else every database on the server.

    `recorded` is a restore point's metadata of the same source; its row counts are compared (differences
    listed under `row_count_differences`, informational: the snapshot is of another moment).
    """
    with connect_maintenance(info) as conn:
        version = conn.execute("SELECT version()").fetchone()[0]
        present = {r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datallowconn AND NOT "
                                              "datistemplate")}
    recorded_entries = {e["name"]: e for e in (recorded or {}).get("databases") or []}
    expected = list(databases or []) + [name for name in recorded_entries if name not in (databases or [])]
    missing = [name for name in expected if name not in present]
    results, problems, count_differences = [], [f"database {name!r} is missing" for name in missing], []
    # the named databases, or every one on the server (a restored throwaway instance holds only the user's)
    for name in sorted(present & set(expected) if databases else present):
        if name in ("rdsadmin",):  # RDS's own database: not the user's, and not connectable
            continue
        try:
            conn = info.connect(name)
        except PostgresError as exc:
            problems.append(f"database {name!r}: cannot connect: {exc}")
            continue
        with conn:
            result: dict = {"database": name}
            if amcheck:
                result["amcheck"] = _amcheck(conn)
                problems += [f"database {name!r}: index {f['index']}: {f['reason']}"
                             for f in result["amcheck"]["failed"]]
            if name in recorded_entries:
                tables = recorded_entries[name].get("tables") or []
                counts = _row_counts(conn, tables)
                for table in tables:
                    label = f"{table['schema']}.{table['name']}"
                    if counts[label] != table.get("rows"):
                        count_differences.append({"database": name, "table": label, "rows": counts[label],
                                                  "recorded": table.get("rows")})
            results.append(result)
    return {"status": "failed" if problems else "passed", "server_version": version, "databases": results,
            "problems": problems, "row_count_differences": count_differences}
