"""Database-level properties round-trip as `pg_dump --create` keeps them: owner, encoding, locale
provider with its ICU locale (so ORDER BY sorts the same), collation and ctype, connection limit,
ALTER DATABASE ... SET, ALTER ROLE ... IN DATABASE ... SET, grants (with grant option), comment and
IS_TEMPLATE (ALLOW_CONNECTIONS is true on both sides: a database that refuses connections cannot be
dumped); `--replace` of a template drops the old copy as `pg_dump --clean --create` does."""

from __future__ import annotations

import pytest
from rdsbackup.postgres import ConnectionInfo, backup_postgres, restore_postgres
from rdsbackup.repository import Repository

from tests.support.postgres_server import ensure_role, shared_server

pytestmark = pytest.mark.postgres

OWNER, MEMBER = "props_owner", "props_member"

PROPERTIES_SQL = f"""
SELECT pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding), d.datlocprovider, d.daticulocale,
       d.datcollate, d.datctype, d.datconnlimit, d.datacl::text, shobj_description(d.oid, 'pg_database'),
       (SELECT setconfig FROM pg_db_role_setting WHERE setdatabase = d.oid AND setrole = 0),
       (SELECT setconfig FROM pg_db_role_setting WHERE setdatabase = d.oid AND setrole = '{MEMBER}'::regrole),
       d.datistemplate, d.datallowconn
FROM pg_database d WHERE d.datname = %s
"""


def _properties(server, dbname: str) -> tuple:
    with server.connect() as conn:
        return conn.execute(PROPERTIES_SQL, (dbname,)).fetchone()


@pytest.fixture(scope="module")
def server():
    server = shared_server()
    for name in ("props_src", "props_copy"):
        server.drop_database(name)
    ensure_role(server, OWNER)
    ensure_role(server, MEMBER)
    server.psql(f"""
        CREATE DATABASE props_src OWNER {OWNER} TEMPLATE template0 ENCODING 'UTF8'
            LOCALE_PROVIDER icu ICU_LOCALE 'sv-SE' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8' CONNECTION LIMIT 17;
        ALTER DATABASE props_src SET search_path = app, public;
        ALTER DATABASE props_src SET statement_timeout = '5min';
        ALTER ROLE {MEMBER} IN DATABASE props_src SET work_mem = '3MB';
        ALTER ROLE {MEMBER} IN DATABASE props_src SET search_path = "$user", other;
        REVOKE ALL ON DATABASE props_src FROM PUBLIC;
        GRANT CONNECT ON DATABASE props_src TO PUBLIC;
        GRANT CONNECT, TEMPORARY ON DATABASE props_src TO {MEMBER} WITH GRANT OPTION;
        COMMENT ON DATABASE props_src IS 'properties ''quoted''';
        ALTER DATABASE props_src IS_TEMPLATE true;
    """)
    server.psql("CREATE TABLE words (w text PRIMARY KEY);"
                "INSERT INTO words VALUES ('ö'), ('z'), ('a'), ('å'), ('ä'), ('B');", dbname="props_src")
    return server


def test_database_properties_round_trip(server, tmp_path):
    repo = Repository.init(f"file://{tmp_path / 'repo'}", password="pw")
    info = ConnectionInfo(server.host, server.port, server.superuser, server.password)
    backup = backup_postgres(repo, info, databases=["props_src"])
    result = restore_postgres(repo, backup["restore_point_id"], info, database="props_src",
                              target_database="props_copy")
    assert result["warnings"] == []

    source, copy = _properties(server, "props_src"), _properties(server, "props_copy")
    assert source[0] == OWNER and source[2] == "i" and source[3] == "sv-SE" and source[6] == 17
    assert source[11:] == (True, True)  # a template that allows connections
    assert copy == source
    # The ICU locale governs sorting in the restored database as in the source.
    order = "SELECT string_agg(w, '' ORDER BY w) FROM words"
    assert server.execute(order, dbname="props_copy") == server.execute(order, dbname="props_src") == [("aBzåäö",)]


def test_replacing_a_template_drops_the_old_copy(server, tmp_path):
    repo = Repository.init(f"file://{tmp_path / 'repo'}", password="pw")
    info = ConnectionInfo(server.host, server.port, server.superuser, server.password)
    backup = backup_postgres(repo, info, databases=["props_src"])
    restore_postgres(repo, backup["restore_point_id"], info, database="props_src", target_database="props_copy",
                     replace=True)
    result = restore_postgres(repo, backup["restore_point_id"], info, database="props_src",
                              target_database="props_copy", replace=True)
    assert result["warnings"] == []
    assert server.execute("SELECT datname FROM pg_database WHERE datname LIKE 'props_copy%' ORDER BY 1") == [
        ("props_copy",)]
    assert _properties(server, "props_copy") == _properties(server, "props_src")
