"""The backup holds ACCESS SHARE on every table it reads, taken before its snapshot: a TRUNCATE that
comes during the backup waits for it, and the restore point holds the snapshot's rows; a lock that
cannot be had in time fails the backup naming the table and the session in the way."""

from __future__ import annotations

import threading
import time

import pytest
from rdsbackup.postgres import ConnectionInfo, LockConflict, backup_postgres, catalog
from rdsbackup.postgres import backup as backup_module
from rdsbackup.repository import Repository

from tests.support.postgres_server import shared_server

pytestmark = pytest.mark.postgres

ROWS = 500


@pytest.fixture(scope="module")
def server():
    server = shared_server()
    server.drop_database("locks_src")
    server.create_database("locks_src")
    server.psql(f"CREATE TABLE victim (id int PRIMARY KEY, v text);"
                f"INSERT INTO victim SELECT i, md5(i::text) FROM generate_series(1, {ROWS}) i;"
                f"CREATE TABLE other (id int PRIMARY KEY); INSERT INTO other SELECT generate_series(1, 10);",
                dbname="locks_src")
    return server


@pytest.fixture
def repo(tmp_path):
    return Repository.init(f"file://{tmp_path / 'repo'}", password="pw")


def _info(server) -> ConnectionInfo:
    return ConnectionInfo(server.host, server.port, server.superuser, server.password)


def _wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("reader", ["psycopg", "psql"])
@pytest.mark.parametrize("when", ["before its copy", "before its size is read"])
def test_truncate_during_backup_waits_and_the_rows_are_kept(server, repo, monkeypatch, reader, when):
    """The TRUNCATE is started just before the backup reads the table, or its size (after it has
    locked its tables), and may finish whenever it can; the backup must still store every row. A
    reader session then waits behind the queued TRUNCATE, gives up after READER_LOCK_WAIT, and the
    exporting session, which holds the lock, reads instead."""
    if reader == "psql":
        monkeypatch.setattr(backup_module, "PSQL_COPY_MIN_BYTES", 0)
    server.psql(f"INSERT INTO victim SELECT i, md5(i::text) FROM generate_series(1, {ROWS}) i"
                f" ON CONFLICT DO NOTHING", dbname="locks_src")
    truncate_done = threading.Event()
    started: list[threading.Thread] = []

    def truncate():
        server.execute("TRUNCATE victim", dbname="locks_src")
        truncate_done.set()

    def truncate_waiting() -> bool:
        return truncate_done.is_set() or bool(server.execute(
            "SELECT 1 FROM pg_stat_activity WHERE query = 'TRUNCATE victim' AND wait_event_type = 'Lock'"))

    pg_dump_done = threading.Event()
    real_run_tool = backup_module.run_tool

    def run_tool(name, *args, **kw):
        try:
            return real_run_tool(name, *args, **kw)
        finally:
            if name == "pg_dump":
                pg_dump_done.set()

    def pg_dump_has_its_locks() -> bool:
        # pg_dump locks every table too; a TRUNCATE queued before it has would make it wait (and the
        # backup start over, consistently, after the TRUNCATE): that window is not what is tested here.
        return pg_dump_done.is_set() or bool(server.execute(
            "SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE a.application_name LIKE 'rdsbackup-pg_dump-%' AND l.granted"
            " AND l.relation = 'victim'::regclass", dbname="locks_src"))

    def before_reading(table_sql: str) -> None:
        if "victim" in table_sql and not started:
            assert _wait_for(pg_dump_has_its_locks)
            thread = threading.Thread(target=truncate, daemon=True)
            started.append(thread)
            thread.start()
            assert _wait_for(truncate_waiting)

    real_copy_blocks, real_psql = backup_module._copy_blocks, backup_module._PsqlCopy

    def copy_blocks(conn, sql_text, counts, reporter):
        before_reading(sql_text)
        return real_copy_blocks(conn, sql_text, counts, reporter)

    class PsqlCopy(real_psql):
        def __init__(self, info, dbname, encoding, snapshot_id, sql_text, workdir):
            before_reading(sql_text)
            super().__init__(info, dbname, encoding, snapshot_id, sql_text, workdir)

    real_relation_sizes = catalog.relation_sizes
    victim_oid = server.execute("SELECT 'victim'::regclass::oid", dbname="locks_src")[0][0]

    def relation_sizes(conn, oids):
        if victim_oid in oids:
            before_reading("victim")
        return real_relation_sizes(conn, oids)

    if when == "before its size is read":
        monkeypatch.setattr(catalog, "relation_sizes", relation_sizes)
    monkeypatch.setattr(backup_module, "_copy_blocks", copy_blocks)
    monkeypatch.setattr(backup_module, "run_tool", run_tool)
    monkeypatch.setattr(backup_module, "_PsqlCopy", PsqlCopy)
    try:
        result = backup_postgres(repo, _info(server), databases=["locks_src"], jobs=2)
    finally:
        for thread in started:
            thread.join(30)
    assert started and truncate_done.is_set()
    victim = next(t for t in result["databases"][0]["tables"] if t["name"] == "victim")
    assert victim["rows"] == ROWS
    assert len(b"".join(repo.open_stream(victim["stream"])).splitlines()) == ROWS
    assert server.execute("SELECT count(*) FROM victim", dbname="locks_src") == [(0,)]


def test_a_lock_that_cannot_be_had_names_the_table_and_the_session(server, repo):
    with server.connect("locks_src") as blocker:
        blocker.execute("SET application_name = 'schema-migration'")
        blocker.execute("BEGIN")
        blocker.execute("LOCK TABLE victim IN ACCESS EXCLUSIVE MODE")
        pid = blocker.info.backend_pid
        started = time.monotonic()
        with pytest.raises(LockConflict) as err:
            backup_postgres(repo, _info(server), databases=["locks_src"], lock_timeout=0.5)
        blocker.execute("ROLLBACK")
    message = str(err.value)
    assert time.monotonic() - started < 30
    assert "database 'locks_src': cannot lock table victim within 500 ms" in message
    assert f"session pid {pid}" in message and "'schema-migration'" in message
    assert "holds an ACCESS EXCLUSIVE lock" in message and "LOCK TABLE victim" in message
    assert repo.list_restore_points() == []
