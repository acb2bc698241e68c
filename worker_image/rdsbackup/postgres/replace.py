"""`restore postgres --replace`, atomic for the user: a database that exists and holds data is never
dropped before its replacement is whole.

For each such target database:
1. restore into a temporary database `<target>_rdsbackup_restoring_<random>` (a normal restore);
2. verify it: every table the restore point recorded is recounted and its digest recomputed
   (`validate_database`; FORCE ROW LEVEL SECURITY lifted meanwhile where it binds the restoring role);
   any difference fails the replace;
3. swap names: warn (on stderr, before doing it) about the sessions connected to the target and
   terminate them, rename the target to `<target>_rdsbackup_replaced_<UTC time>`, rename the temporary
   database to the target's name;
4. drop the old database, only now.

On any failure before the swap the temporary database is dropped and the target is exactly as it was.
If the second rename fails, the old database is renamed back. If dropping the old database fails, it
is kept under its `..._replaced_...` name and a warning says so. Databases that do not exist or are
empty are restored into directly, as without --replace. Roles (--include-globals) are server-wide and
are restored before any database, as without --replace.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from .connection import ConnectionInfo, connect_maintenance, one_line
from .errors import RestoreFailed

RESTORING = "_rdsbackup_restoring_"
REPLACED = "_rdsbackup_replaced_"
MAX_IDENTIFIER = 63  # NAMEDATALEN - 1: PostgreSQL truncates longer names silently
RENAME_ATTEMPTS = 5


def side_name(target: str, marker: str, suffix: str) -> str:
    """`<target><marker><suffix>`, the target part shortened so the whole fits in 63 bytes."""
    tail = (marker + suffix).encode()
    head = target.encode()[: MAX_IDENTIFIER - len(tail)].decode("utf-8", "ignore")
    return head + marker + suffix


def warn_on_stderr(message: str) -> None:
    print(f"rdsbackup: warning: {message}", file=sys.stderr, flush=True)


def replace_postgres(repo, restore_point_id: str, info: ConnectionInfo, *, database: str | None = None,
                     target_database: str | None = None, include_globals: bool = False,
                     warn: Callable[[str], None] = warn_on_stderr, **restore_options) -> dict:
    """Restore with --replace semantics (see the module docstring); returns restore_postgres's summary
    plus, per replaced database, "replaced": the name the old one had while it was kept."""
    from .restore import restore_point_metadata, restore_postgres
    from .validate import validate_database

    meta = restore_point_metadata(repo.load_manifest(restore_point_id))
    entries = [e for e in meta.get("databases") or [] if database is None or e["name"] == database]
    if not entries or (target_database is not None and len(entries) != 1):
        # restore_postgres names the problem (unknown database, --target-database without --database).
        return restore_postgres(repo, restore_point_id, info, database=database, target_database=target_database,
                                include_globals=include_globals, replace=False, **restore_options)
    plan = [(e, target_database or e["name"]) for e in entries]
    occupied = _occupied(info, [target for _e, target in plan])

    summary = {"restore_point_id": restore_point_id, "databases": [], "warnings": []}
    staged: list[tuple[dict, str, str]] = []  # (entry, target, temporary name)
    globals_pending = include_globals
    try:
        for entry, target in plan:
            into = side_name(target, RESTORING, os.urandom(4).hex()) if target in occupied else target
            if into != target:
                staged.append((entry, target, into))
            result = restore_postgres(repo, restore_point_id, info, database=entry["name"], target_database=into,
                                      include_globals=globals_pending, replace=False, **restore_options)
            globals_pending = False
            summary["warnings"] += result.get("warnings", [])
            for db in result["databases"]:
                summary["databases"].append({**db, "target": target})
            if into != target:
                with _policies_not_forced(info, into):
                    check = validate_database(info, entry, into)
                if check["differences"]:
                    first = check["differences"][0]
                    raise RestoreFailed(
                        f"database {target!r} not replaced: the restored copy differs from restore point "
                        f"{restore_point_id} ({len(check['differences'])} difference(s), first: {first['table']}: "
                        f"{first['reason']}); {target!r} is unchanged")
    except BaseException:
        for _entry, _target, temporary in staged:
            _drop_quietly(info, temporary)
        raise

    for _entry, target, temporary in staged:
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        old = side_name(target, REPLACED, stamp)
        try:
            _swap(info, target, temporary, old, warn)
        except BaseException:
            _drop_quietly(info, temporary)
            raise
        for db in summary["databases"]:
            if db["target"] == target:
                db["replaced"] = old
        try:
            _drop(info, old)
        except psycopg.Error as exc:
            summary["warnings"].append(f"database {target!r} was replaced; the old database is kept as {old!r} "
                                       f"because it could not be dropped ({one_line(str(exc))}): drop it yourself")
    return summary


@contextlib.contextmanager
def _policies_not_forced(info: ConnectionInfo, dbname: str):
    """FORCE ROW LEVEL SECURITY lifted, for the verification, from the tables of the temporary copy
    whose policies bind the restoring role as their owner (RDS's master user restoring its own
    tables): the verification reads every row with row_security off, which for such a table is an
    error. Set again afterwards; nobody else uses the copy before the swap."""
    with info.connect(dbname) as conn:
        forced = [r[0] for r in conn.execute(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relrowsecurity AND c.relforcerowsecurity AND pg_has_role(c.relowner, 'USAGE')"
            " AND NOT (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user)").fetchall()]
        for name in forced:
            conn.execute(f"ALTER TABLE {name} NO FORCE ROW LEVEL SECURITY")
        try:
            yield
        finally:
            for name in forced:
                conn.execute(f"ALTER TABLE {name} FORCE ROW LEVEL SECURITY")


def _occupied(info: ConnectionInfo, targets: list[str]) -> set[str]:
    """The targets that exist and hold something (these are replaced by a swap)."""
    from . import catalog

    found = set()
    with connect_maintenance(info) as admin:
        existing = [t for t in targets
                    if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (t,)).fetchone()]
    for target in existing:
        with info.connect(target) as conn:
            if not catalog.is_empty(conn):
                found.add(target)
    return found


def _sessions(admin, dbname: str) -> list[tuple]:
    return admin.execute(
        "SELECT pid, usename, application_name, client_addr::text FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,)).fetchall()


def _terminate(admin, dbname: str) -> None:
    admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                  "WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,))


def _swap(info: ConnectionInfo, target: str, temporary: str, old: str, warn: Callable[[str], None]) -> None:
    with connect_maintenance(info) as admin:
        sessions = _sessions(admin, target)
        if sessions:
            who = ", ".join(f"pid {pid} ({user or '?'}{', ' + app if app else ''}{', ' + addr if addr else ''})"
                            for pid, user, app, addr in sessions[:10])
            more = f" and {len(sessions) - 10} more" if len(sessions) > 10 else ""
            warn(f"terminating {len(sessions)} session(s) connected to database {target!r} to swap in the "
                 f"restored copy: {who}{more}")
        renamed = False
        error: psycopg.Error | None = None
        for attempt in range(RENAME_ATTEMPTS):
            _terminate(admin, target)
            try:
                admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(target),
                                                                               sql.Identifier(old)))
                renamed = True
                break
            except psycopg.errors.ObjectInUse as exc:  # a client reconnected at once: terminate again
                error = exc
                time.sleep(0.2 * (attempt + 1))
            except psycopg.Error as exc:
                raise RestoreFailed(f"cannot replace database {target!r}: renaming it aside failed "
                                    f"({one_line(str(exc))}); it is unchanged") from None
        if not renamed:
            raise RestoreFailed(f"cannot replace database {target!r}: clients kept reconnecting "
                                f"({one_line(str(error))}); it is unchanged")
        try:
            admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(temporary),
                                                                           sql.Identifier(target)))
        except psycopg.Error as exc:
            # Put the old one back under its name: the target is as it was.
            _terminate(admin, old)
            admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old),
                                                                           sql.Identifier(target)))
            raise RestoreFailed(f"cannot replace database {target!r}: renaming the restored copy failed "
                                f"({one_line(str(exc))}); {target!r} is unchanged") from None


def _drop(info: ConnectionInfo, dbname: str) -> None:
    with connect_maintenance(info) as admin:
        force = sql.SQL(" WITH (FORCE)") if admin.info.server_version >= 130000 else sql.SQL("")
        if admin.info.server_version < 130000:
            _terminate(admin, dbname)
        # A template cannot be dropped: unmark it first (as pg_dump --clean --create does).
        if admin.execute("SELECT datistemplate FROM pg_database WHERE datname = %s", (dbname,)).fetchone() == (True,):
            admin.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(sql.Identifier(dbname)))
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}{}").format(sql.Identifier(dbname), force))


def _drop_quietly(info: ConnectionInfo, dbname: str) -> None:
    """Remove a temporary database on the way out of a failure; never hide the failure itself."""
    with contextlib.suppress(Exception):
        _drop(info, dbname)
