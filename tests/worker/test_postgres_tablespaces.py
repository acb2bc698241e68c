"""Tablespaces: every table, index and materialized view goes back to the tablespace it was in when the
target has that tablespace and the restoring role may use it, as pg_restore puts it; otherwise into the
default tablespace, with one warning naming the tablespace (pg_restore reports an error per object)."""

from __future__ import annotations

import os
import subprocess

import pytest
from rdsbackup.postgres import ConnectionInfo, backup_postgres, restore_postgres
from rdsbackup.repository import Repository

from tests.support.postgres_server import (
    create_tablespace,
    drop_tablespace,
    ensure_role,
    shared_server,
    table_checksums,
)

pytestmark = pytest.mark.postgres

TABLESPACE = "rdsbackup_test_ts"
DATABASES = ("ts_src", "ts_ours", "ts_control", "ts_rds")
RESTORER, RESTORER_PASSWORD = "ts_restorer", "ts-restorer-pw"

PLACES_SQL = """
SELECT c.relname, coalesce(t.spcname, 'default') FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_tablespace t ON t.oid = c.reltablespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i', 'm', 'p') ORDER BY 1
"""


@pytest.fixture(scope="module")
def server():
    server = shared_server()
    for name in DATABASES:
        server.drop_database(name)
    drop_tablespace(server, TABLESPACE, None)
    location = create_tablespace(server, TABLESPACE)
    ensure_role(server, RESTORER, f"LOGIN CREATEDB PASSWORD '{RESTORER_PASSWORD}'")
    server.execute("CREATE DATABASE ts_src")
    server.psql(f"""
        CREATE TABLE placed (id int PRIMARY KEY USING INDEX TABLESPACE {TABLESPACE}, v text) TABLESPACE {TABLESPACE};
        CREATE INDEX placed_v ON placed (v) TABLESPACE {TABLESPACE};
        CREATE TABLE plain (id int PRIMARY KEY, v text);
        CREATE TABLE parted (id int, v text) PARTITION BY RANGE (id) TABLESPACE {TABLESPACE};
        CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (100);
        CREATE MATERIALIZED VIEW counted TABLESPACE {TABLESPACE} AS SELECT count(*) AS n FROM placed;
        INSERT INTO placed SELECT i, md5(i::text) FROM generate_series(1, 50) i;
        INSERT INTO plain SELECT i, md5(i::text) FROM generate_series(1, 50) i;
        INSERT INTO parted SELECT i, md5(i::text) FROM generate_series(1, 50) i;
        REFRESH MATERIALIZED VIEW counted;
    """, dbname="ts_src")
    yield server
    for name in DATABASES:
        server.drop_database(name)
    drop_tablespace(server, TABLESPACE, location)


def _places(server, dbname: str) -> list[tuple]:
    return server.execute(PLACES_SQL, dbname=dbname)


def test_objects_go_back_to_their_tablespace_as_with_pg_restore(server, tmp_path):
    repo = Repository.init(f"file://{tmp_path / 'repo'}", password="pw")
    info = ConnectionInfo(server.host, server.port, server.superuser, server.password)
    backup = backup_postgres(repo, info, databases=["ts_src"])
    assert backup["databases"][0]["tablespaces"] == [TABLESPACE]
    result = restore_postgres(repo, backup["restore_point_id"], info, database="ts_src", target_database="ts_ours")
    assert result["warnings"] == []

    dump = str(tmp_path / "control.dump")
    env = dict(os.environ, PGPASSWORD=server.password)
    conn = ["-h", server.host, "-p", str(server.port), "-U", server.superuser]
    subprocess.run([f"{server.bin_dir}/pg_dump", "-Fc", *conn, "-f", dump, "ts_src"], env=env, check=True)
    server.execute("CREATE DATABASE ts_control")
    subprocess.run([f"{server.bin_dir}/pg_restore", *conn, "-d", "ts_control", dump], env=env, check=True)

    places = _places(server, "ts_src")
    assert ("placed", TABLESPACE) in places and ("placed_pkey", TABLESPACE) in places
    assert ("counted", TABLESPACE) in places and ("plain", "default") in places
    assert _places(server, "ts_control") == places
    assert _places(server, "ts_ours") == places
    assert table_checksums(server, "ts_ours") == table_checksums(server, "ts_src")


def test_a_tablespace_the_restoring_role_cannot_use_is_named_once(server, tmp_path):
    repo = Repository.init(f"file://{tmp_path / 'repo'}", password="pw")
    info = ConnectionInfo(server.host, server.port, server.superuser, server.password)
    backup = backup_postgres(repo, info, databases=["ts_src"])
    restorer = ConnectionInfo(server.host, server.port, RESTORER, RESTORER_PASSWORD)
    result = restore_postgres(repo, backup["restore_point_id"], restorer, database="ts_src",
                              target_database="ts_rds")
    assert [w for w in result["warnings"] if "tablespace" in w] == [
        f"database 'ts_rds': tablespace(s) {TABLESPACE} missing on the target or not usable by {RESTORER}: "
        f"every object is in the default tablespace"]
    assert {place for _name, place in _places(server, "ts_rds")} == {"default"}
    assert table_checksums(server, "ts_rds") == table_checksums(server, "ts_src")
