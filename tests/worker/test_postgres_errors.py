"""Bad connection input gets a one-line error that says what is wrong, and writes no restore point."""

from __future__ import annotations

import socket
import time

import pytest
from rdsbackup.postgres import (
    AuthenticationFailed,
    BackupFailed,
    ConnectionInfo,
    DatabaseNotFound,
    ServerUnreachable,
    backup_postgres,
)
from rdsbackup.postgres import backup as backup_module
from rdsbackup.postgres.errors import ToolFailed
from rdsbackup.repository import Repository

from tests.support.postgres_server import shared_server

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def postgres_server():
    return shared_server()


@pytest.fixture
def repo(tmp_path):
    url = f"file://{tmp_path / 'repo'}"
    Repository.init(url, password="pw")
    return Repository.open(url, password="pw")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_wrong_password_says_authentication_failed(postgres_server, repo):
    info = ConnectionInfo(postgres_server.host, postgres_server.port, postgres_server.superuser, "wrong-password")
    with pytest.raises(AuthenticationFailed) as err:
        backup_postgres(repo, info)
    assert "authentication failed for user 'postgres'" in str(err.value)
    assert "wrong-password" not in str(err.value) and "\n" not in str(err.value)
    assert repo.list_restore_points() == []


def test_unreachable_host_says_cannot_reach(repo):
    info = ConnectionInfo("127.0.0.1", _closed_port(), "postgres", "pw", connect_timeout=3)
    with pytest.raises(ServerUnreachable, match=r"cannot reach PostgreSQL at 127\.0\.0\.1:"):
        backup_postgres(repo, info)
    assert repo.list_restore_points() == []


def test_unknown_database_is_named(postgres_server, repo):
    info = ConnectionInfo(postgres_server.host, postgres_server.port, postgres_server.superuser,
                          postgres_server.password)
    with pytest.raises(DatabaseNotFound, match="database 'no_such_db' does not exist"):
        backup_postgres(repo, info, databases=["postgres", "no_such_db"])
    assert repo.list_restore_points() == []


@pytest.fixture
def small_database(postgres_server):
    postgres_server.drop_database("globals_errors")
    postgres_server.create_database("globals_errors")
    postgres_server.psql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2);",
                         dbname="globals_errors")
    yield "globals_errors"
    postgres_server.drop_database("globals_errors")


def test_globals_that_cannot_be_dumped_cost_only_the_globals(postgres_server, repo, small_database, monkeypatch):
    """pg_dumpall runs beside the databases' dumps: when it fails, the restore point is still made,
    without globals, and its first warning says why."""
    def failing_pg_dumpall(info, maintenance_db):
        raise ToolFailed("pg_dumpall: error: query failed: ERROR:  permission denied for table pg_authid")

    monkeypatch.setattr(backup_module, "dump_globals", failing_pg_dumpall)
    info = ConnectionInfo(postgres_server.host, postgres_server.port, postgres_server.superuser,
                          postgres_server.password)
    result = backup_postgres(repo, info, databases=[small_database])
    assert result["globals"] is None
    assert result["warnings"][0].startswith("globals not dumped: pg_dumpall: error: query failed")
    assert [t["rows"] for t in result["databases"][0]["tables"]] == [2]
    assert [p["id"] for p in repo.list_restore_points()] == [result["restore_point_id"]]


def test_a_failing_database_waits_for_the_globals_dump_and_commits_nothing(postgres_server, repo, small_database,
                                                                           monkeypatch):
    """A database that fails while pg_dumpall still runs fails the backup once pg_dumpall has ended
    (nothing writes to the aborted restore point), and no restore point appears."""
    real_dump_globals = backup_module.dump_globals
    ended = []

    def slow_pg_dumpall(info, maintenance_db):
        time.sleep(2)
        script = real_dump_globals(info, maintenance_db)
        ended.append(True)
        return script

    monkeypatch.setattr(backup_module, "dump_globals", slow_pg_dumpall)
    monkeypatch.setattr(backup_module, "copy_out_sql",
                        lambda table, key_order=True: f"COPY (SELECT 1/0 FROM {table.qualified}) TO STDOUT")
    info = ConnectionInfo(postgres_server.host, postgres_server.port, postgres_server.superuser,
                          postgres_server.password)
    with pytest.raises(BackupFailed, match=r"database 'globals_errors', table public\.t: .*division by zero"):
        backup_postgres(repo, info, databases=[small_database])
    assert ended == [True]
    assert repo.list_restore_points() == []
