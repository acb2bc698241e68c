"""Every table PostgreSQL allows backs up and restores: no columns at all (created so, all dropped, only
generated ones), covering (INCLUDE) keys over types without ordering, keys of every orderable kind
(enum, range, array, composite, an ICU collation), generated and dropped columns, inheritance and
partitions (rows once, in the right table), unlogged tables, wide rows, domains/enums/ranges and
arrays of every built-in type. A table that cannot be read fails the backup naming it."""

from __future__ import annotations

import pytest
from rdsbackup.postgres import BackupFailed, ConnectionInfo, backup_postgres, restore_postgres
from rdsbackup.postgres import backup as backup_module
from rdsbackup.repository import Repository

from tests.support.pg_types import TABLE_SHAPES_SQL, all_types_table_sql
from tests.support.postgres_server import ensure_role, schema_dump, shared_server, table_checksums

pytestmark = pytest.mark.postgres



@pytest.fixture(scope="module")
def server():
    server = shared_server()
    for name in ("shapes_src", "shapes_copy"):
        server.drop_database(name)
    server.create_database("shapes_src")
    server.psql(TABLE_SHAPES_SQL + all_types_table_sql("s.all_types"), dbname="shapes_src")
    return server


def _info(server) -> ConnectionInfo:
    return ConnectionInfo(server.host, server.port, server.superuser, server.password)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return Repository.init(f"file://{tmp_path_factory.mktemp('shapes-repo')}", password="pw")


@pytest.mark.parametrize("reader", ["psycopg", "psql"])
def test_every_table_shape_round_trips(server, repo, monkeypatch, reader):
    monkeypatch.setattr(backup_module, "KEY_ORDER_MIN_BYTES", 0)  # key order even for one-page tables
    if reader == "psql":
        monkeypatch.setattr(backup_module, "PSQL_COPY_MIN_BYTES", 0)
    backup = backup_postgres(repo, _info(server), databases=["shapes_src"], jobs=3)
    tables = {(t["schema"], t["name"]): t for t in backup["databases"][0]["tables"]}
    assert tables[("s", "no_columns")]["rows"] == 2 and tables[("s", "no_columns")]["columns"] == []
    assert tables[("s", "all_dropped")]["rows"] == 3
    assert tables[("s", "covering")]["key"] == ["id"] and tables[("s", "covering")]["order"] == "primary-key"
    # Inheritance: each table's own rows once; partitions: leaves only.
    assert [tables[("s", n)]["rows"] for n in ("parent", "child", "grandchild")] == [1, 1, 1]
    assert ("s", "events") not in tables and ("s", "events_2025") not in tables
    assert sum(tables[("s", n)]["rows"] for n in ("events_2025_a", "events_2025_rest", "events_other")) == 300

    covering = b"".join(repo.open_stream(tables[("s", "covering")]["stream"])).splitlines()
    assert [int(row.split(b"\t")[0]) for row in covering] == list(range(1, 31))
    icu = b"".join(repo.open_stream(tables[("s", "key_icu")]["stream"])).decode().splitlines()
    assert icu == ["a", "B", "z", "å", "ä", "ö"]  # Swedish order, the key's collation

    server.drop_database("shapes_copy")
    restore_postgres(repo, backup["restore_point_id"], _info(server), database="shapes_src",
                     target_database="shapes_copy", jobs=3)
    assert table_checksums(server, "shapes_copy") == table_checksums(server, "shapes_src")
    assert schema_dump(server, "shapes_copy") == schema_dump(server, "shapes_src")
    assert server.execute("SELECT count(*) FROM s.no_columns", dbname="shapes_copy") == [(2,)]
    assert server.execute("SELECT count(*), sum(b) FROM s.gen_dropped", dbname="shapes_copy") == [(20, 420)]


def test_an_unreadable_table_fails_the_backup_naming_it(server, repo, monkeypatch):
    """Row-level security that applies to the backup's role (not the owner, not a superuser) makes a
    table unreadable with row_security off. The error names that table, not one that happened to be
    read next on the same connection; no restore point appears."""
    ensure_role(server, "limited_backup", "LOGIN PASSWORD 'limited-pw'")
    server.psql("""
        DROP TABLE IF EXISTS s.guarded;
        CREATE TABLE s.guarded (id int PRIMARY KEY, owner_name text);
        INSERT INTO s.guarded SELECT i, 'x' FROM generate_series(1, 10) i;
        ALTER TABLE s.guarded ENABLE ROW LEVEL SECURITY;
        CREATE POLICY mine ON s.guarded USING (owner_name = current_user);
        GRANT USAGE ON SCHEMA s TO limited_backup;
        GRANT SELECT ON ALL TABLES IN SCHEMA s TO limited_backup;
        GRANT SELECT ON ALL SEQUENCES IN SCHEMA s TO limited_backup;
    """, dbname="shapes_src")
    before = repo.list_restore_points()
    info = ConnectionInfo(server.host, server.port, "limited_backup", "limited-pw")
    try:
        with pytest.raises(BackupFailed) as err:
            backup_postgres(repo, info, databases=["shapes_src"], jobs=1)
    finally:
        server.psql("DROP TABLE s.guarded", dbname="shapes_src")
    message = str(err.value)
    assert "table s.guarded" in message and "row-level security" in message, message
    assert "current transaction is aborted" not in message
    assert repo.list_restore_points() == before
