"""Bad connection input gets a one-line error that says what is wrong, and writes no restore point."""

from __future__ import annotations

import socket

import pytest
from rdsbackup.postgres import (
    AuthenticationFailed,
    ConnectionInfo,
    DatabaseNotFound,
    ServerUnreachable,
    backup_postgres,
)
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
