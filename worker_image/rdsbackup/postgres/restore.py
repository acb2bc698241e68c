"""`rdsbackup restore postgres`: a restore point (or one database of it) into a target server.

Per database, as `pg_restore -j` orders it: the schema's pre-data section (tables without indexes
or constraints), then table rows in parallel (`COPY FROM STDIN`) and the large objects, then the data
section of the schema dump (sequence values) and its post-data section (indexes, constraints,
triggers, policies, materialized view refreshes) with `pg_restore -j`.

Works as a role that is not a superuser (RDS's master user): it creates the databases it restores,
keeps the original owners where it may become them, and else owns the objects itself (with a warning).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

import psycopg
from psycopg import sql

from ..progress import Reporter
from . import catalog
from .autovacuum import autovacuum_paused
from .backup import METADATA_FORMATS
from .catalog import quote_ident
from .connection import ConnectionInfo, connect_maintenance, one_line
from .errors import DatabaseNotFound, RestoreFailed, TargetNotEmpty
from .globals import restore_globals
from .largeobjects import restore_large_objects
from .predata import pre_data_in_batches
from .settings import data_session_settings
from .tools import classify_pg_restore_errors, conninfo_dbname, first_error, run_tool, run_tool_unchecked

# Memory for each session's index builds and constraint checks after the data is in.
DEFAULT_MAINTENANCE_WORK_MEM = "256MB"
MEMORY_SETTING = re.compile(r"[1-9][0-9]{0,9}(kB|MB|GB)")

# Tables at least this large are loaded in parts (`load_plan`).
PART_BYTES = 64 * 1024 * 1024


def restore_point_metadata(manifest: dict) -> dict:
    """The metadata our backup committed, from a manifest (wrapped under `metadata`, or as is)."""
    meta = manifest.get("metadata", manifest) if isinstance(manifest, dict) else None
    if not isinstance(meta, dict):
        raise RestoreFailed("restore point has no PostgreSQL metadata")
    return meta


def restore_postgres(repo, restore_point_id: str, info: ConnectionInfo, *, database: str | None = None,
                     target_database: str | None = None, include_globals: bool = False,
                     replace: bool = False, jobs: int = 4, reporter: Reporter | None = None,
                     maintenance_work_mem: str = DEFAULT_MAINTENANCE_WORK_MEM, security_labels: bool = True) -> dict:
    """Restore; returns a summary (databases restored, rows, warnings). `security_labels=False` leaves
    every security label out, as `pg_restore --no-security-labels` (for a target server that does not
    load the labels' providers)."""
    if not MEMORY_SETTING.fullmatch(maintenance_work_mem):
        raise RestoreFailed(f"maintenance_work_mem {maintenance_work_mem!r} is not a PostgreSQL memory size "
                            f"(a number with kB, MB or GB)")
    if replace:  # atomic for the user: restored beside, verified, then swapped (replace.py)
        from .replace import replace_postgres

        return replace_postgres(repo, restore_point_id, info, database=database, target_database=target_database,
                                include_globals=include_globals, jobs=jobs, reporter=reporter,
                                maintenance_work_mem=maintenance_work_mem, security_labels=security_labels)
    reporter = reporter or Reporter()
    meta = restore_point_metadata(repo.load_manifest(restore_point_id))
    if meta.get("engine") != "postgres" or meta.get("format") not in METADATA_FORMATS:
        raise RestoreFailed(f"restore point {restore_point_id} is not a PostgreSQL backup of a known format "
                            f"(engine {meta.get('engine')!r}, format {meta.get('format')!r})")
    entries = meta["databases"]
    if database is not None:
        entries = [e for e in entries if e["name"] == database]
        if not entries:
            names = ", ".join(e["name"] for e in meta["databases"]) or "none"
            raise DatabaseNotFound(f"restore point {restore_point_id} has no database {database!r} "
                                   f"(it has: {names})")
    if target_database is not None and len(entries) != 1:
        raise RestoreFailed("--target-database needs --database: the restore point holds several databases")
    plan = [(e, target_database or e["name"]) for e in entries]
    warnings: list[str] = []

    with connect_maintenance(info) as admin:
        maintenance_db = admin.info.dbname
        is_superuser = admin.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
                                     ).fetchone()[0]
        # Check every target before changing anything.
        existing: dict[str, bool] = {}
        for _entry, target in plan:
            if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target,)).fetchone():
                with info.connect(target) as conn:
                    empty = catalog.is_empty(conn)
                if not empty and not replace:
                    raise TargetNotEmpty(f"database {target!r} already exists on {info.endpoint} and is not "
                                         f"empty (use --replace to drop and recreate it)")
                existing[target] = empty

    if include_globals:
        if meta.get("globals"):
            reporter.status("globals")
            script = repo.open_stream(meta["globals"], restore_point=restore_point_id)
            warnings += restore_globals(info, maintenance_db, script)
        else:
            warnings.append("the restore point holds no globals (roles were not dumped)")

    for entry in entries:
        reporter.add_total(entry.get("table_bytes", 0))
    results = []
    for entry, target in plan:
        results.append(_restore_database(repo, restore_point_id, info, entry, target, existing=existing,
                                         maintenance_db=maintenance_db, is_superuser=is_superuser,
                                         jobs=jobs, reporter=reporter, warnings=warnings,
                                         maintenance_work_mem=maintenance_work_mem, security_labels=security_labels))
    return {"restore_point_id": restore_point_id, "databases": results, "warnings": warnings}


def _prepare_target(info: ConnectionInfo, maintenance_db: str, entry: dict, target: str,
                    existing: dict[str, bool], warnings: list[str]) -> None:
    with info.connect(maintenance_db) as admin:
        if target in existing and not existing[target]:
            force = sql.SQL(" WITH (FORCE)") if admin.info.server_version >= 130000 else sql.SQL("")
            try:
                admin.execute(sql.SQL("DROP DATABASE {}{}").format(sql.Identifier(target), force))
            except psycopg.Error as exc:
                raise RestoreFailed(f"cannot replace database {target!r}: {one_line(str(exc))}") from None
        elif target in existing:
            return  # exists and is empty: restore into it
        create = sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING {}").format(
            sql.Identifier(target), sql.Literal(entry["encoding"]))
        locale = sql.SQL(" LC_COLLATE {} LC_CTYPE {}").format(sql.Literal(entry["collate"]),
                                                              sql.Literal(entry["ctype"]))
        locale += _locale_provider_sql(entry.get("properties") or {}, admin.info.server_version, warnings, target)
        try:
            admin.execute(create + locale)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise RestoreFailed(f"cannot create database {target!r}: {one_line(str(exc))}") from None
        except psycopg.Error as exc:
            # The source's locale may not exist on the target server: the server's default then.
            warnings.append(f"database {target!r} created with the server's default locale "
                            f"({one_line(str(exc))})")
            admin.execute(create)


def _locale_provider_sql(props: dict, server_version: int, warnings: list[str], target: str) -> sql.Composable:
    """LOCALE_PROVIDER and ICU_LOCALE/ICU_RULES as the source database had them (PostgreSQL 15+)."""
    provider = props.get("locale_provider") or "c"
    if provider == "c":
        return sql.SQL("")
    if server_version < 150000:
        warnings.append(f"database {target!r}: the target server has no locale providers (before PostgreSQL 15): "
                        f"created with libc collation instead of {provider!r} ({props.get('icu_locale')})")
        return sql.SQL("")
    names = {"i": "icu", "b": "builtin"}
    clause = sql.SQL(" LOCALE_PROVIDER {}").format(sql.SQL(names.get(provider, "libc")))
    if props.get("icu_locale"):
        keyword = "ICU_LOCALE" if provider == "i" else "BUILTIN_LOCALE"
        clause += sql.SQL(" {} {}").format(sql.SQL(keyword), sql.Literal(props["icu_locale"]))
    if props.get("icu_rules"):
        clause += sql.SQL(" ICU_RULES {}").format(sql.Literal(props["icu_rules"]))
    return clause


def _foreign_owners(info: ConnectionInfo, target: str, owners: list[str], is_superuser: bool,
                    warnings: list[str]) -> list[str]:
    """The owners the restoring role cannot become: their objects stay owned by the restoring role
    (pg_restore's `ALTER ... OWNER TO` fails for them, and only for them: every other object keeps
    its owner). One warning names them."""
    if is_superuser:
        return []
    with info.connect(target) as conn:
        foreign = [o for o in owners if not conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %s)"
            " AND pg_has_role(current_user, %s, 'MEMBER')", (o, o)).fetchone()[0]]
    if not foreign:
        return []
    warnings.append(f"database {target!r}: objects owned by {', '.join(foreign)} are owned by "
                    f"{info.user} (cannot become those roles)")
    return foreign


# The post-data entries restored after all others, in this order (see `_post_data_steps`), by their
# kind in a `pg_restore --list` line: "<dump id>; <catalog oid> <oid> <kind> <schema> <name> <owner>".
_ROW_SECURITY, _REFRESH = "ROW SECURITY", "MATERIALIZED VIEW DATA"
_TOC_KIND = re.compile(r"^\d+; \d+ \d+ (ROW SECURITY|MATERIALIZED VIEW DATA) ")


def _post_data_steps(info: ConnectionInfo, path: str) -> list[tuple[list[str], list[str]]]:
    """The data and post-data sections of the archive at `path` as pg_restore runs: (sections, options),
    each with a `--use-list` file beside `path`.

    1. everything but the two kinds below, with pg_restore's row_security = off;
    2. `ALTER TABLE ... ENABLE ROW LEVEL SECURITY`: after the foreign keys, whose validation must see
       every row of the referenced table (with row-level security enabled on a FORCE table, its
       owner - the restoring role on RDS - gets an error with row_security off and a filtered view
       with it on). pg_restore keeps this order when it runs alone, not always with --jobs;
    3. materialized views' refreshes, last (as pg_restore orders them), with --enable-row-security:
       the view's query, run as its owner, under the policies that apply to that owner, as a REFRESH
       in the source runs. row_security off makes the refresh fail wherever a policy applies.
    """
    toc_path = path + ".toc"
    with open(toc_path, "wb") as out:
        run_tool("pg_restore", ["--list", path], info, stdout=out)
    with open(toc_path, encoding="utf-8", errors="surrogateescape") as f:
        lines = f.read().splitlines()
    later: dict[str, list[str]] = {_ROW_SECURITY: [], _REFRESH: []}
    for ln in lines:
        kind = _TOC_KIND.match(ln)
        if kind:
            later[kind.group(1)].append(ln)
    deferred = set(later[_ROW_SECURITY]) | set(later[_REFRESH])

    def list_file(name: str, entries: list[str]) -> str:
        list_path = f"{path}.{name}.list"
        with open(list_path, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write("\n".join(entries) + "\n")
        return list_path

    steps = [(["data", "post-data"], [f"--use-list={list_file('first', [ln for ln in lines if ln not in deferred])}"])]
    if later[_ROW_SECURITY]:
        steps.append((["post-data"], [f"--use-list={list_file('row-security', later[_ROW_SECURITY])}"]))
    if later[_REFRESH]:
        steps.append((["post-data"], [f"--use-list={list_file('refresh', later[_REFRESH])}", "--enable-row-security"]))
    return steps


def _tablespace_options(info: ConnectionInfo, target: str, entry: dict, warnings: list[str]) -> list[str]:
    """`--no-tablespaces` unless every tablespace the backup's objects were in exists on the target and
    the restoring role may create objects in it (then each object goes back to its tablespace, as
    pg_restore puts it); one warning names those missing. A restore point that did not record its
    tablespaces (before format 2's `tablespaces`) restores into the default tablespace."""
    if "tablespaces" not in entry:
        return ["--no-tablespaces"]
    if not entry["tablespaces"]:
        return []
    with info.connect(target) as conn:
        usable = {r[0] for r in conn.execute(
            "SELECT spcname FROM pg_tablespace WHERE spcname = ANY (%s)"
            " AND has_tablespace_privilege(spcname, 'CREATE')", (entry["tablespaces"],)).fetchall()}
    missing = [t for t in entry["tablespaces"] if t not in usable]
    if not missing:
        return []
    warnings.append(f"database {target!r}: tablespace(s) {', '.join(missing)} missing on the target or not "
                    f"usable by {info.user}: every object is in the default tablespace")
    return ["--no-tablespaces"]


def _pg_restore(info: ConnectionInfo, target: str, path: str, sections: list[str], extra: list[str],
                warnings: list[str], jobs: int = 1, settings: dict[str, str] | None = None,
                foreign_owners: list[str] = ()) -> None:
    args = ["--no-password", f"--dbname={conninfo_dbname(target)}", *extra]
    args += [f"--section={s}" for s in sections]
    if jobs > 1:
        args.append(f"--jobs={jobs}")
    args.append(path)
    returncode, stderr = run_tool_unchecked("pg_restore", args, info, settings=settings)
    found = classify_pg_restore_errors(stderr)
    warnings.extend(f"database {target!r}: {w}" for w in found.warnings
                    if not _is_owner_change_to(w, foreign_owners))
    if found.errors:
        more = f" (and {len(found.errors) - 1} more)" if len(found.errors) > 1 else ""
        raise RestoreFailed(f"database {target!r}: pg_restore: {found.errors[0]}{more}")
    if returncode != 0 and not found.warnings:
        raise RestoreFailed(f"database {target!r}: pg_restore failed (exit {returncode}): "
                            f"{first_error(stderr) or 'no message'}")


def _pre_data(info: ConnectionInfo, target: str, path: str, options: list[str], warnings: list[str],
              foreign: list[str], start_over) -> None:
    """The pre-data section: in batches of statements (predata.py) into a database this restore created,
    when no statement is expected to fail; else, or when a batch fails (after `start_over`), as
    `pg_restore` runs it, which goes on past failing statements and names them (an ALTER ... OWNER TO a
    role the restoring role cannot become fails for every object of that owner)."""
    if start_over is not None and not foreign:
        if pre_data_in_batches(info, target, path, options):
            return
        start_over()
    _pg_restore(info, target, path, ["pre-data"], options, warnings, foreign_owners=foreign)


def _is_owner_change_to(message: str, roles: list[str]) -> bool:
    """Whether a pg_restore error is an `ALTER ... OWNER TO <role>` (or default privileges `FOR ROLE
    <role>`) for one of `roles`: already said once by `_foreign_owners`' warning."""
    match = re.search(r'(?:OWNER TO|FOR ROLE) ("(?:[^"]|"")+"|[^\s;]+)', message)
    if not match:
        return False
    name = match.group(1)
    name = name[1:-1].replace('""', '"') if name.startswith('"') else name
    return name in roles


# Settings whose value is a list of names: each element is quoted on its own (as pg_dump does).
_LIST_SETTINGS = {"search_path", "temp_tablespaces", "session_preload_libraries", "local_preload_libraries"}


def _setting_sql(target: str, setting: str, role: str | None = None) -> sql.Composable:
    """`ALTER DATABASE ... SET` (or `ALTER ROLE ... IN DATABASE ... SET`) for one `name=value` entry."""
    name, _, value = setting.partition("=")
    if name in _LIST_SETTINGS:
        items = [v.strip() for v in value.split(",") if v.strip()]
        items = [v[1:-1].replace('""', '"') if len(v) > 1 and v[0] == v[-1] == '"' else v for v in items]
        rendered = sql.SQL(", ").join(sql.Literal(v) for v in items) if items else sql.Literal("")
    else:
        rendered = sql.Literal(value)
    if role is not None:
        return sql.SQL("ALTER ROLE {} IN DATABASE {} SET {} = {}").format(
            sql.Identifier(role), sql.Identifier(target), sql.Identifier(name), rendered)
    return sql.SQL("ALTER DATABASE {} SET {} = {}").format(sql.Identifier(target), sql.Identifier(name), rendered)


def _apply_database_properties(info: ConnectionInfo, target: str, owner: str | None, props: dict,
                                warnings: list[str]) -> None:
    """Owner, settings, comment, security labels, grants, connection limit, per-role settings and the
    template mark of the database itself (under its new name, if renamed), as `pg_dump --create` writes
    them. Applied after the load: the connection limit must not stop the load's sessions, a new owner
    must not take the restoring role's rights away mid-load, and settings must not change how the load
    reads values. What the target refuses is a warning, except a security label: as pg_restore fails
    the label of any other object, a label the target cannot apply (its provider is not loaded there)
    fails the restore rather than leave unprotected what it protected."""
    name = sql.Identifier(target)
    statements: list[sql.Composable] = []
    if owner:
        statements.append(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(name, sql.Identifier(owner)))
    statements += [_setting_sql(target, s) for s in props.get("settings") or []]
    if props.get("comment") is not None:
        statements.append(sql.SQL("COMMENT ON DATABASE {} IS {}").format(name, sql.Literal(props["comment"])))
    labels = [sql.SQL("SECURITY LABEL FOR {} ON DATABASE {} IS {}").format(
        sql.Identifier(label["provider"]), name, sql.Literal(label["label"]))
        for label in props.get("security_labels") or []]
    if props.get("acl") is not None:
        statements.append(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(name))
        for grant in props["acl"]:
            grantee, privilege = grant.rsplit(" ", 1)
            option = sql.SQL(" WITH GRANT OPTION") if privilege.endswith("+") else sql.SQL("")
            statements.append(sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                sql.SQL(privilege.rstrip("+")), name, sql.SQL(grantee), option))
    if props.get("connection_limit", -1) != -1:
        statements.append(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(
            name, sql.Literal(int(props["connection_limit"]))))
    for role_setting in props.get("role_settings") or []:
        statements += [_setting_sql(target, s, role=role_setting["role"]) for s in role_setting["settings"]]
    if props.get("is_template"):
        # Last, as pg_dump --create writes it: a template is what new databases are copied from.
        statements.append(sql.SQL("ALTER DATABASE {} IS_TEMPLATE true").format(name))
    if not statements and not labels:
        return
    with info.connect(target) as conn:
        for stmt in labels:
            try:
                conn.execute(stmt)
            except psycopg.Error as exc:
                raise RestoreFailed(f"database {target!r}: {stmt.as_string(conn)} failed: {one_line(str(exc))}") \
                    from None
        for stmt in statements:
            try:
                conn.execute(stmt)
            except psycopg.Error as exc:
                warnings.append(f"database {target!r}: {stmt.as_string(conn)} failed: {one_line(str(exc))}")


def copy_in_sql(table: dict) -> str:
    name = f"{quote_ident(table['schema'])}.{quote_ident(table['name'])}"
    if not table["columns"]:
        return f"COPY {name} FROM STDIN"  # no stored columns: every (empty) line is a row
    cols = ", ".join(quote_ident(c) for c in table["columns"])
    return f"COPY {name} ({cols}) FROM STDIN"


def load_plan(tables: list[dict], jobs: int) -> list[tuple[dict, tuple[int, int] | None]]:
    """The COPY sessions that load the tables, largest first: a table of at least PART_BYTES is loaded
    by up to `jobs` sessions side by side, each COPYing a part of its rows (whole rows: the stream
    splits after a newline), because the server parses COPY input on one core per session, and one
    large table would otherwise keep a restore waiting on one core."""
    plan = []
    for table in tables:
        parts = min(max(1, jobs), table["bytes"] // PART_BYTES)
        if parts > 1:
            plan += [(table, (p, parts), table["bytes"] / parts) for p in range(parts)]
        else:
            plan.append((table, None, table["bytes"]))
    plan.sort(key=lambda item: item[2], reverse=True)
    return [(table, part) for table, part, _size in plan]


# Tables smaller than this are loaded several to a transaction, up to BATCH_BYTES or BATCH_TABLES.
BATCH_TABLE_BYTES = 256 * 1024
BATCH_BYTES = 4 * 1024 * 1024
BATCH_TABLES = 200


def load_batches(plan: list[tuple[dict, tuple[int, int] | None]]) -> list[list[tuple[dict, tuple[int, int] | None]]]:
    """The load plan cut into tasks: a large table (or part) alone, small tables together."""
    batches: list[list] = []
    current: list = []
    size = 0
    for table, part in plan:
        if part is not None or table["bytes"] >= BATCH_TABLE_BYTES:
            batches.append([(table, part)])
            continue
        if current and (size + table["bytes"] > BATCH_BYTES or len(current) >= BATCH_TABLES):
            batches.append(current)
            current, size = [], 0
        current.append((table, part))
        size += table["bytes"]
    if current:
        batches.append(current)
    return batches


class _LoadSessions:
    """One connection per loading thread, opened on first use and kept for every table that thread
    loads (a login per table costs SCRAM, and on RDS a TLS handshake and a round trip); all closed at
    the end of the block."""

    def __init__(self, info: ConnectionInfo, target: str, settings: dict[str, str]):
        self._info, self._target, self._settings = info, target, settings
        self._local = threading.local()
        self._opened: list[psycopg.Connection] = []
        self._lock = threading.Lock()

    def connection(self) -> psycopg.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self._info.connect(self._target, settings=self._settings)
            with self._lock:
                self._opened.append(conn)
            self._local.conn = conn
        return conn

    def __enter__(self) -> _LoadSessions:
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            conns, self._opened = self._opened, []
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()


def _set_sequences(conn: psycopg.Connection, target: str, sequences: list[dict]) -> None:
    """Each sequence where the backup found it (`setval`, as pg_dump's SEQUENCE SET), 500 a statement."""
    for start in range(0, len(sequences), 500):
        batch = sequences[start:start + 500]
        calls = sql.SQL(", ").join(
            sql.SQL("pg_catalog.setval({}::regclass, {}, {})").format(
                sql.Literal(s["name"]), sql.Literal(s["last_value"]), sql.Literal(s["is_called"])) for s in batch)
        try:
            conn.execute(sql.SQL("SELECT {}").format(calls))
        except psycopg.Error as exc:
            raise RestoreFailed(f"database {target!r}: setting sequence values: {one_line(str(exc))}") from None


def _restore_database(repo, restore_point_id: str, info: ConnectionInfo, entry: dict, target: str, *,
                      existing: dict[str, bool], maintenance_db: str, is_superuser: bool, jobs: int,
                      reporter: Reporter, warnings: list[str], maintenance_work_mem: str,
                      security_labels: bool) -> dict:
    reporter.status(target)
    with tempfile.TemporaryDirectory(prefix="rdsbackup-") as workdir:
        # Fetch the schema first: a damaged repository fails the restore before the target changes.
        schema_path = os.path.join(workdir, "schema.dump")
        with open(schema_path, "wb") as f:
            repo.read_stream_to(entry["schema"], f, restore_point=restore_point_id)
        _prepare_target(info, maintenance_db, entry, target, existing, warnings)
        created = target not in existing or not existing[target]

        def start_over() -> None:
            """The database as `_prepare_target` created it, empty (after a failed batch of pre-data)."""
            with info.connect(maintenance_db) as admin:
                force = sql.SQL(" WITH (FORCE)") if admin.info.server_version >= 130000 else sql.SQL("")
                admin.execute(sql.SQL("DROP DATABASE {}{}").format(sql.Identifier(target), force))
            _prepare_target(info, maintenance_db, entry, target, {}, [])

        try:
            return _load_database(repo, restore_point_id, info, entry, target, schema_path,
                                  is_superuser=is_superuser, jobs=jobs, reporter=reporter, warnings=warnings,
                                  maintenance_work_mem=maintenance_work_mem, security_labels=security_labels,
                                  start_over=start_over if created else None)
        except BaseException:
            if created:
                # A half-restored database would only make the retry fail with "not empty".
                _drop_quietly(info, maintenance_db, target)
            raise


def _drop_quietly(info: ConnectionInfo, maintenance_db: str, target: str) -> None:
    try:
        with info.connect(maintenance_db) as admin:
            force = sql.SQL(" WITH (FORCE)") if admin.info.server_version >= 130000 else sql.SQL("")
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}{}").format(sql.Identifier(target), force))
    except Exception:
        pass


def _load_database(repo, restore_point_id: str, info: ConnectionInfo, entry: dict, target: str,
                   schema_path: str, *, is_superuser: bool, jobs: int, reporter: Reporter,
                   warnings: list[str], maintenance_work_mem: str, security_labels: bool,
                   start_over=None) -> dict:
    foreign = _foreign_owners(info, target, entry.get("owners", []), is_superuser, warnings)
    # pg_restore's options for every section: where objects go, and whether labels come along.
    pg_restore_options = _tablespace_options(info, target, entry, warnings)
    if not security_labels:
        pg_restore_options.append("--no-security-labels")
    _pre_data(info, target, schema_path, pg_restore_options, warnings, foreign, start_over)

    # The rows are read in the styles they were written in (settings.py), whatever the target's defaults.
    load_settings = {**data_session_settings(entry["encoding"]), "synchronous_commit": "off"}

    sessions = _LoadSessions(info, target, load_settings)

    def load_tables(batch: list[tuple[dict, tuple[int, int] | None]]) -> int:
        """COPY a batch of tables (or one part of a large one) on this thread's session, in one
        transaction: thousands of small tables cost neither a login nor a commit each."""
        conn = sessions.connection()
        rows = 0
        with conn.transaction():
            for table, blocks in _batch_streams(batch):
                try:
                    with conn.cursor() as cur:
                        with cur.copy(copy_in_sql(table)) as copy:
                            for block in blocks:
                                copy.write(block)
                                reporter.advance(len(block))
                        rows += cur.rowcount
                except psycopg.Error as exc:
                    raise RestoreFailed(f"database {target!r}, table {table['schema']}.{table['name']}: "
                                        f"{one_line(str(exc))}") from None
        return rows

    def _batch_streams(batch: list[tuple[dict, tuple[int, int] | None]]):
        """(table, its rows' bytes) for each table of `batch`: a batch of small tables read from the
        repository together (one read for the lot, not two per table), a large table streamed."""
        if len(batch) == 1:
            table, part = batch[0]
            yield table, repo.open_stream(table["stream"], restore_point=restore_point_id, part=part)
            return
        data = repo.read_streams([table["stream"] for table, _part in batch], restore_point=restore_point_id)
        for (table, _part), text in zip(batch, data, strict=True):
            yield table, (text,) if text else ()

    def load_lobs() -> int:
        with info.connect(target, settings=load_settings) as conn:
            blocks = repo.open_stream(entry["large_objects"], restore_point=restore_point_id)
            return restore_large_objects(conn, blocks, set_owner=True, warn=warnings.append,
                                         skip_owners=set(foreign), security_labels=security_labels)

    tables = entry["tables"]
    with info.connect(target) as admin, autovacuum_paused(admin, tables), sessions:
        with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="rdsbackup-load") as pool:
            futures = [pool.submit(load_tables, batch) for batch in load_batches(load_plan(tables, jobs))]
            lob_future = pool.submit(load_lobs) if entry.get("large_objects") else None
            done, pending = wait(futures + ([lob_future] if lob_future else []), return_when=FIRST_EXCEPTION)
            for f in done:
                if f.exception() is not None:
                    for p in pending:
                        p.cancel()
                    raise f.exception()
        rows = sum(f.result() for f in futures)
        _set_sequences(admin, target, entry.get("sequences") or [])
        # Index builds and foreign-key checks sort in memory with a larger maintenance_work_mem (the
        # PostgreSQL manual's advice for bulk loads); each of the `jobs` sessions may use that much.
        for sections, options in _post_data_steps(info, schema_path):
            _pg_restore(info, target, schema_path, sections, [*options, *pg_restore_options], warnings, jobs=jobs,
                        foreign_owners=foreign,
                        settings={"maintenance_work_mem": maintenance_work_mem})
    properties = entry.get("properties") or {}
    if not security_labels:
        properties = {**properties, "security_labels": []}
    _apply_database_properties(info, target, entry.get("owner") if entry.get("owner") not in foreign else None,
                               properties, warnings)
    return {"name": entry["name"], "target": target, "tables": len(tables), "rows": rows,
            "large_objects": lob_future.result() if lob_future else 0}
