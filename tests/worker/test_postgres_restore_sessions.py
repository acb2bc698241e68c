"""A restore of many small tables reuses one session per --jobs slot (and loads small tables several
to a transaction) instead of logging in once per table."""

from __future__ import annotations

import pytest
from rdsbackup.postgres import ConnectionInfo, backup_postgres, restore_postgres
from rdsbackup.postgres.restore import load_batches
from rdsbackup.repository import Repository

from tests.support.postgres_server import shared_server, table_checksums

pytestmark = pytest.mark.postgres

TABLES = 80


@pytest.fixture(scope="module")
def server():
    server = shared_server()
    for name in ("many_src", "many_copy"):
        server.drop_database(name)
    server.create_database("many_src")
    server.psql(f"""
        SELECT format('CREATE TABLE t%s (id int PRIMARY KEY, v text); INSERT INTO t%s SELECT i, md5(i::text)
                       FROM generate_series(1, %s) i', n, n, n) FROM generate_series(1, {TABLES}) n \\gexec
    """, dbname="many_src")
    return server


def test_many_small_tables_load_on_one_session_per_job(server, tmp_path, monkeypatch):
    repo = Repository.init(f"file://{tmp_path / 'repo'}", password="pw")
    info = ConnectionInfo(server.host, server.port, server.superuser, server.password)
    backup = backup_postgres(repo, info, databases=["many_src"])

    logins: list[str] = []
    real_connect = ConnectionInfo.connect

    def counting_connect(self, dbname, **kw):
        logins.append(dbname)
        return real_connect(self, dbname, **kw)

    monkeypatch.setattr(ConnectionInfo, "connect", counting_connect)
    result = restore_postgres(repo, backup["restore_point_id"], info, database="many_src",
                              target_database="many_copy", jobs=2)
    monkeypatch.undo()
    assert result["databases"][0]["rows"] == TABLES * (TABLES + 1) // 2
    # The loading sessions (at most 2) plus a handful of administrative ones, not one per table.
    assert logins.count("many_copy") <= 2 + 4, logins
    assert table_checksums(server, "many_copy") == table_checksums(server, "many_src")


def test_small_tables_are_batched_and_large_ones_go_alone():
    def table(name, size):
        return {"name": name, "bytes": size}

    small = [table(f"s{i}", 1000) for i in range(250)]
    big = table("big", 10 * 1024 * 1024)
    batches = load_batches([(big, None), (big, (0, 2)), *((t, None) for t in small)])
    assert [len(b) for b in batches] == [1, 1, 200, 50]
