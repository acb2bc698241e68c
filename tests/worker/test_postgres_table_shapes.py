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

from tests.support.pg_types import all_types_table_sql
from tests.support.postgres_server import ensure_role, schema_dump, shared_server, table_checksums

pytestmark = pytest.mark.postgres

SHAPES_SQL = r"""
CREATE SCHEMA s;
CREATE TYPE s.mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN s.posint AS int CHECK (VALUE > 0);
CREATE TYPE s.pair AS (a int, b text);
CREATE TYPE s.floatrange AS RANGE (subtype = float8);

CREATE TABLE s.no_columns ();
INSERT INTO s.no_columns DEFAULT VALUES; INSERT INTO s.no_columns DEFAULT VALUES;
CREATE TABLE s.all_dropped (a int, b text);
INSERT INTO s.all_dropped VALUES (1, 'x'), (2, 'y'), (3, 'z');
ALTER TABLE s.all_dropped DROP COLUMN a, DROP COLUMN b;
CREATE TABLE s.only_generated (g int GENERATED ALWAYS AS (42) STORED);
INSERT INTO s.only_generated DEFAULT VALUES;

-- covering keys: the INCLUDE columns have no btree ordering; rows go in key order
CREATE TABLE s.covering (id int, b box, p point, j json, x xml, PRIMARY KEY (id) INCLUDE (b, p, j, x));
INSERT INTO s.covering SELECT 31 - i, box(point(i, i), point(0, 0)), point(i, -i), json_build_object('i', i),
    xmlelement(name e, i) FROM generate_series(1, 30) i;

-- keys of orderable types other than plain scalars
CREATE TABLE s.key_enum (m s.mood PRIMARY KEY, v int);
INSERT INTO s.key_enum VALUES ('happy', 1), ('sad', 2), ('ok', 3);
CREATE TABLE s.key_range (r int4range PRIMARY KEY);
INSERT INTO s.key_range VALUES ('[5,6)'), ('empty'), ('[1,9)'), ('(,3)');
CREATE TABLE s.key_array (a int[] PRIMARY KEY);
INSERT INTO s.key_array VALUES ('{2,1}'), ('{1}'), ('{}'), ('{1,NULL}');
CREATE TABLE s.key_composite (p s.pair PRIMARY KEY);
INSERT INTO s.key_composite VALUES (ROW(2, 'a')), (ROW(1, 'b')), (ROW(1, NULL));
CREATE TABLE s.key_icu (t text COLLATE "sv-x-icu" PRIMARY KEY);
INSERT INTO s.key_icu VALUES ('ö'), ('z'), ('a'), ('å'), ('ä'), ('B');

-- generated and dropped columns among the stored ones
CREATE TABLE s.gen_dropped (id int PRIMARY KEY, a int, gone text, b int GENERATED ALWAYS AS (a * 2) STORED, c text);
INSERT INTO s.gen_dropped (id, a, gone, c) SELECT i, i, 'g', 'c' || i FROM generate_series(1, 20) i;
ALTER TABLE s.gen_dropped DROP COLUMN gone;

-- inheritance (two levels) and partitions (sub-partitioned, with a default partition)
CREATE TABLE s.parent (id int PRIMARY KEY, v text);
CREATE TABLE s.child (extra int) INHERITS (s.parent);
CREATE TABLE s.grandchild (more text) INHERITS (s.child);
INSERT INTO s.parent VALUES (1, 'p');
INSERT INTO s.child VALUES (2, 'c', 20);
INSERT INTO s.grandchild VALUES (3, 'g', 30, 'm');
CREATE TABLE s.events (id int, at date NOT NULL, kind text NOT NULL, PRIMARY KEY (id, at, kind))
    PARTITION BY RANGE (at);
CREATE TABLE s.events_2025 PARTITION OF s.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')
    PARTITION BY LIST (kind);
CREATE TABLE s.events_2025_a PARTITION OF s.events_2025 FOR VALUES IN ('a');
CREATE TABLE s.events_2025_rest PARTITION OF s.events_2025 DEFAULT;
CREATE TABLE s.events_other PARTITION OF s.events DEFAULT;
INSERT INTO s.events SELECT i, DATE '2024-06-01' + i * 3, (ARRAY['a', 'b'])[1 + i % 2]
    FROM generate_series(1, 300) i;

CREATE UNLOGGED TABLE s.scratch (k text PRIMARY KEY, v bytea);
INSERT INTO s.scratch SELECT 'k' || i, decode(md5(i::text), 'hex') FROM generate_series(1, 50) i;

-- wide rows: one value of 12 MB, and 1000 columns
CREATE TABLE s.big_value (id int PRIMARY KEY, t text, b bytea);
INSERT INTO s.big_value SELECT 1, string_agg(md5(i::text), ''), decode(string_agg(md5(i::text), ''), 'hex')
    FROM generate_series(1, 400000) i;
SELECT format('CREATE TABLE s.many_columns (id int PRIMARY KEY, %s)',
              string_agg(format('c%s int DEFAULT %s', i, i), ', ')) FROM generate_series(1, 1000) i \gexec
INSERT INTO s.many_columns (id) SELECT generate_series(1, 5);

-- user-defined types and arrays of them
CREATE TABLE s.custom (id int PRIMARY KEY, m s.mood, m_arr s.mood[], d s.posint, d_arr s.posint[],
    p s.pair, p_arr s.pair[], r s.floatrange, r_arr s.floatrange[]);
INSERT INTO s.custom VALUES
    (1, 'ok', '{sad,happy}', 7, '{1,2}', ROW(1, 'x,"y"'), ARRAY[ROW(2, NULL)::s.pair], '[1.5,2.5)', '{"[1,2)",empty}'),
    (2, NULL, '{}', NULL, NULL, ROW(NULL, NULL), '{}', 'empty', NULL);
"""


@pytest.fixture(scope="module")
def server():
    server = shared_server()
    for name in ("shapes_src", "shapes_copy"):
        server.drop_database(name)
    server.create_database("shapes_src")
    server.psql(SHAPES_SQL + all_types_table_sql("s.all_types"), dbname="shapes_src")
    return server


def _info(server) -> ConnectionInfo:
    return ConnectionInfo(server.host, server.port, server.superuser, server.password)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return Repository.init(f"file://{tmp_path_factory.mktemp('shapes-repo')}", password="pw")


@pytest.mark.parametrize("reader", ["psycopg", "psql"])
def test_every_table_shape_round_trips(server, repo, monkeypatch, reader):
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
