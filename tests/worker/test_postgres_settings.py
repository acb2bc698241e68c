"""Values come back exactly whatever the source's and the target's session defaults are: the backup
and the restore pin DateStyle, IntervalStyle, extra_float_digits, client_encoding, lc_monetary ...
as pg_dump and pg_restore do."""

from __future__ import annotations

import pytest
from rdsbackup.postgres import ConnectionInfo, backup_postgres, restore_postgres
from rdsbackup.repository import Repository

from tests.support.postgres_server import ensure_role, shared_server

pytestmark = pytest.mark.postgres

RESTORER = "restorer_mdy"
RESTORER_PASSWORD = "restorer-password"

VALUES_SQL = r"""
CREATE TABLE styled (id int PRIMARY KEY, d date, ts timestamp, tstz timestamptz, iv interval,
                     f4 real, f8 float8, m money, b bytea, x xml, t text);
INSERT INTO styled VALUES
 (1, '2026-03-04', '2026-03-04 05:06:07.123456', '2026-03-04 05:06:07+02', '-1 day -02:03:00',
  0.1, 0.1, 1234.56, '\x00ff', '<a>1</a>text', 'ünïcødé'),
 (2, '1999-12-31', '0001-01-01 00:00:00', 'infinity', '1 year 2 mons -3 days 04:05:06.789',
  3.4028235e38, 1.7976931348623157e308, -0.01, '\x', 'fragment <b/> and text', E'tab\there'),
 (3, '2000-02-01', '2000-02-01 12:00:00', '2000-02-01 12:00:00-05', '-00:00:01', -0, 2.2250738585072014e-308,
  0, NULL, NULL, NULL);
"""

# What the source sessions would write and the target sessions read without pinning: a day-first
# date style, the SQL-standard interval style, fewer float digits, another monetary format.
SOURCE_DEFAULTS = """
ALTER DATABASE styled_src SET datestyle = 'SQL, DMY';
ALTER DATABASE styled_src SET intervalstyle = 'sql_standard';
ALTER DATABASE styled_src SET extra_float_digits = -3;
ALTER DATABASE styled_src SET bytea_output = 'escape';
ALTER DATABASE styled_src SET xmloption = 'document';
"""
TARGET_DEFAULTS = f"""
ALTER ROLE {RESTORER} SET datestyle = 'SQL, MDY';
ALTER ROLE {RESTORER} SET intervalstyle = 'iso_8601';
ALTER ROLE {RESTORER} SET xmloption = 'document';
ALTER ROLE {RESTORER} SET client_encoding = 'LATIN1';
"""

CANONICAL = ("SELECT id, d::text, ts::text, extract(epoch FROM tstz)::text, extract(epoch FROM iv)::text,"
             " iv::text, f4::float8::text, f8::text, m::numeric::text, encode(b, 'hex'),"
             " x::text, t FROM styled ORDER BY id")


def _canonical(server, dbname: str) -> list[tuple]:
    """The values in a fixed style, independent of the database's defaults."""
    with server.connect(dbname) as conn:
        for stmt in ("SET datestyle = ISO", "SET intervalstyle = postgres", "SET extra_float_digits = 3",
                     "SET client_encoding = UTF8", "SET TimeZone = UTC"):
            conn.execute(stmt)
        return conn.execute(CANONICAL).fetchall()


@pytest.fixture(scope="module")
def server():
    server = shared_server()
    for name in ("styled_src", "styled_copy"):
        server.drop_database(name)
    server.create_database("styled_src")
    server.psql(VALUES_SQL + SOURCE_DEFAULTS, dbname="styled_src")
    ensure_role(server, RESTORER, f"LOGIN SUPERUSER PASSWORD '{RESTORER_PASSWORD}'")
    server.psql(TARGET_DEFAULTS)
    return server


def test_values_round_trip_across_different_session_defaults(server, tmp_path):
    url = f"file://{tmp_path / 'repo'}"
    Repository.init(url, password="pw")
    repo = Repository.open(url, password="pw")
    source = ConnectionInfo(server.host, server.port, server.superuser, server.password)
    target = ConnectionInfo(server.host, server.port, RESTORER, RESTORER_PASSWORD)

    backup = backup_postgres(repo, source, databases=["styled_src"])
    restore_postgres(repo, backup["restore_point_id"], target, database="styled_src",
                     target_database="styled_copy")

    expected = _canonical(server, "styled_src")
    assert expected[0][1] == "2026-03-04" and expected[0][5] == "-1 days -02:03:00"
    assert _canonical(server, "styled_copy") == expected
    # The database's own defaults came back too, applied after the rows were in.
    settings = server.execute("SELECT setconfig FROM pg_db_role_setting s JOIN pg_database d"
                              " ON d.oid = s.setdatabase WHERE d.datname = 'styled_copy' AND s.setrole = 0")
    assert "DateStyle=SQL, DMY" in settings[0][0] and "IntervalStyle=sql_standard" in settings[0][0]
