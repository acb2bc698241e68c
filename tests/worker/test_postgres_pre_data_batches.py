"""The pre-data section goes to the server many statements to a round trip (predata.py): the script
`pg_restore -f` writes is cut into statements exactly where they end, and a failing batch makes the
restore start over the pg_restore way, with pg_restore's result and warnings."""

from __future__ import annotations

import pytest
from rdsbackup.postgres import ConnectionInfo, backup_postgres, predata, restore_postgres, tools
from rdsbackup.postgres.predata import split_statements
from rdsbackup.repository import Repository

from tests.support.postgres_server import schema_dump, shared_server, table_checksums

pytestmark = pytest.mark.postgres

TRICKY_SCRIPT = b"""--
-- PostgreSQL database dump
--

\\restrict AbC123

SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);

--
-- Name: f; Type: FUNCTION; Schema: public; Owner: postgres
--

CREATE FUNCTION public.f() RETURNS text LANGUAGE sql AS $_$ SELECT 'a;b' || $x$;$x$ $_$;
/* a block comment; /* nested; */ still a comment; */
COMMENT ON FUNCTION public.f() IS 'it''s; a -- test';
CREATE TABLE public."odd;name" (a$b$c int, "x""y;" text DEFAULT E'\\';x');
-- a comment with ; in it
CREATE VIEW public.v AS SELECT 1 AS one;

\\unrestrict AbC123
"""


def test_statements_end_only_at_their_own_semicolons():
    statements = split_statements(TRICKY_SCRIPT)
    assert [s.strip().split(b"\n")[-1] for s in statements] == [
        b"SET standard_conforming_strings = on;",
        b"SELECT pg_catalog.set_config('search_path', '', false);",
        b"CREATE FUNCTION public.f() RETURNS text LANGUAGE sql AS $_$ SELECT 'a;b' || $x$;$x$ $_$;",
        b"COMMENT ON FUNCTION public.f() IS 'it''s; a -- test';",
        b"CREATE TABLE public.\"odd;name\" (a$b$c int, \"x\"\"y;\" text DEFAULT E'\\';x');",
        b"CREATE VIEW public.v AS SELECT 1 AS one;",
    ]
    # Sent as written: joined, they are the script without the psql commands around it.
    body = TRICKY_SCRIPT[TRICKY_SCRIPT.index(b"\\restrict AbC123\n") + 17:TRICKY_SCRIPT.index(b"\n\n\\unrestrict")]
    assert b"".join(statements).endswith(body)


@pytest.mark.parametrize("script", [
    b"\\connect other\nCREATE TABLE t (a int);\n",  # a psql command other than \restrict
    b"CREATE TABLE t (a text DEFAULT 'never closed);\n",
    b"CREATE FUNCTION f() RETURNS int AS $$ SELECT 1;\n",
    b"CREATE TABLE t (a int);\nCREATE TABLE u (a int)\n",  # cut short
    b"SET standard_conforming_strings = off;\nCREATE TABLE t (a text DEFAULT 'x\\';y');\n",
])
def test_a_script_only_psql_can_run_is_not_cut(script):
    assert split_statements(script) is None


@pytest.fixture(scope="module")
def server():
    server = shared_server()
    for name in ("pre_src", "pre_ours", "pre_control"):
        server.drop_database(name)
    server.execute("DROP ROLE IF EXISTS pre_gone")
    server.create_database("pre_src")
    server.psql("""
        CREATE SCHEMA app;
        CREATE TYPE app.mood AS ENUM ('sad', 'ok');
        CREATE FUNCTION app.twice(int) RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT $1 * 2; $$;
        SELECT format('CREATE TABLE app.t%s (id int PRIMARY KEY, m app.mood, v int GENERATED ALWAYS AS
                       (app.twice(id)) STORED); INSERT INTO app.t%s (id, m) VALUES (%s, ''ok'')', n, n, n)
        FROM generate_series(1, 250) n \\gexec
        COMMENT ON TABLE app.t7 IS 'seven; with a semicolon';
    """, dbname="pre_src")
    return server


def tool_runs(monkeypatch) -> list[list[str]]:
    """The arguments of every client program run from now on."""
    runs: list[list[str]] = []
    real = tools._run

    def spy(name, args, env, **kw):
        runs.append([name, *args])
        return real(name, args, env, **kw)

    monkeypatch.setattr(tools, "_run", spy)
    return runs


def test_pre_data_goes_in_batches_and_restores_what_pg_restore_does(server, tmp_path, monkeypatch):
    repo = Repository.init(f"file://{tmp_path / 'repo'}", password="pw")
    info = ConnectionInfo(server.host, server.port, server.superuser, server.password)
    rp = backup_postgres(repo, info, databases=["pre_src"])["restore_point_id"]
    monkeypatch.setattr(predata, "BATCH_STATEMENTS", 40)
    batches: list[int] = []
    real_batches = predata._batches
    monkeypatch.setattr(predata, "_batches", lambda statements: (batches.append(1) or b for b in
                                                                  real_batches(statements)))
    runs = tool_runs(monkeypatch)
    result = restore_postgres(repo, rp, info, database="pre_src", target_database="pre_ours", jobs=2)

    assert result["warnings"] == []
    pre_data = [r for r in runs if "--section=pre-data" in r]
    assert len(pre_data) == 1 and "--file=-" in pre_data[0]  # the script, not pg_restore into the database
    assert 500 / 40 <= len(batches) <= 600 / 40  # ~2 statements per table (CREATE, OWNER TO), 40 a batch
    assert schema_dump(server, "pre_ours") == schema_dump(server, "pre_src")
    assert table_checksums(server, "pre_ours") == table_checksums(server, "pre_src")


def test_a_failing_batch_starts_over_the_pg_restore_way(server, tmp_path, monkeypatch):
    """A table whose owner is gone by restore time: pg_restore goes past the failing ALTER ... OWNER TO
    with a warning and the table stays with the restoring role; a batch is rolled back whole."""
    server.psql("CREATE ROLE pre_gone NOLOGIN; CREATE TABLE app.owned (id int); INSERT INTO app.owned VALUES (1);"
                "ALTER TABLE app.owned OWNER TO pre_gone", dbname="pre_src")
    repo = Repository.init(f"file://{tmp_path / 'repo'}", password="pw")
    info = ConnectionInfo(server.host, server.port, server.superuser, server.password)
    rp = backup_postgres(repo, info, databases=["pre_src"])["restore_point_id"]
    server.psql("ALTER TABLE app.owned OWNER TO postgres", dbname="pre_src")
    server.execute("DROP ROLE pre_gone")
    runs = tool_runs(monkeypatch)
    result = restore_postgres(repo, rp, info, database="pre_src", target_database="pre_ours_again", jobs=2)

    assert [r for r in runs if "--section=pre-data" in r and "--file=-" not in r], "not started over"
    assert len(result["warnings"]) == 1 and 'role "pre_gone" does not exist' in result["warnings"][0]
    assert schema_dump(server, "pre_ours_again") == schema_dump(server, "pre_src")
    assert table_checksums(server, "pre_ours_again") == table_checksums(server, "pre_src")
    server.drop_database("pre_ours_again")
