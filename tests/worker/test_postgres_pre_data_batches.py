"""The pre-data section goes to the server many statements to a round trip (predata.py): the script
`pg_restore -f` writes is cut into statements exactly where psql would end them, and a failing batch,
or a script that cannot be cut so, makes the restore start over the pg_restore way, with pg_restore's
result and warnings."""

from __future__ import annotations

import os
import subprocess

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
    b"CREATE TABLE t (a int);\x00CREATE TABLE u (a int);\n",  # no statement holds a NUL
    b"CREATE TABLE t (a int);\nfoo\n",  # after the last statement: neither a statement nor a comment
])
def test_a_script_only_psql_can_run_is_not_cut(script):
    assert split_statements(script) is None


# Semicolons next to multibyte text: where a cut lands depends on the offsets meaning bytes of the script.
MULTIBYTE_STATEMENTS = [
    '\n--\n-- Name: fün; Type: FUNCTION; Owner: é\n--\n\n'
    'CREATE FUNCTION "sché;ma"."fün;"() RETURNS text LANGUAGE plpgsql AS $_$\nBEGIN\n'
    "  RETURN 'naïve;' || $é$;€;$é$ || $x$ «; » $x$; -- commentaire; é\nEND;\n$_$;",
    "\n/* bloc « é; » /* imbriqué; */ ; */\nCOMMENT ON TABLE \"sché;ma\".\"tàble;\" IS 'ça; « ''€;'' »';",
    '\nCREATE TABLE "sché;ma"."tàble;" ("côl;""q" text DEFAULT E\'\\\'; é\', ü int);',
    '\nCREATE FUNCTION "sché;ma".atomic(x int) RETURNS text LANGUAGE sql\nBEGIN ATOMIC\n'
    " SELECT CASE WHEN x > 0 THEN 'plus; é' ELSE 'moins;' END;\n SELECT 'deux; ü';\nEND;",
    '\nCREATE VIEW "vüe" AS SELECT \'é\' AS "€";',
]
# Characters of 3 and 4 bytes in UTF-8.
WIDE_STATEMENTS = [
    "\nCOMMENT ON TABLE \"日本語;\" IS '日本語; テスト ''😀;''';",
    '\nCREATE FUNCTION "😀"() RETURNS text LANGUAGE sql AS $😀$ SELECT \'😀;\' $😀$;',
]


@pytest.mark.parametrize(("encoding", "expected"), [
    ("utf-8", MULTIBYTE_STATEMENTS + WIDE_STATEMENTS),
    ("iso8859_15", MULTIBYTE_STATEMENTS),  # LATIN9: one byte a character, not valid UTF-8
])
def test_cuts_land_on_the_right_byte_next_to_multibyte_text(encoding, expected):
    """Each statement comes back exactly, with its comments and its `;`, whatever the characters around
    the semicolons (the script is cut as bytes, in any server encoding)."""
    script = "\\restrict K3y" + "".join(expected) + "\n\n--\n-- fin; é\n--\n\n\\unrestrict K3y\n"
    assert split_statements(script.encode(encoding)) == [s.encode(encoding) for s in expected]


def test_a_sql_standard_body_is_one_statement():
    """`BEGIN ATOMIC ... END` holds semicolons of its own (and CASE ... END): cut inside, a batch
    boundary there would send half a function."""
    function = (b"CREATE FUNCTION f(x int) RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n"
                b" SELECT CASE WHEN x > 0 THEN 1 ELSE 2 END;\n SELECT 3;\nEND;")
    procedure = b"\nCREATE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC SELECT 1; END;"
    assert split_statements(function + procedure + b"\n") == [function, procedure]


def test_semicolons_in_parentheses_do_not_end_a_statement():
    """As psql: a rule with several actions holds them in parentheses, each with its `;`."""
    rule = (b"\nCREATE RULE r AS ON INSERT TO public.t DO ALSO (INSERT INTO public.log VALUES (1);"
            b" INSERT INTO public.log VALUES (2));")
    assert split_statements(rule + b"\nCREATE VIEW v AS SELECT 1;\n") == [rule, b"\nCREATE VIEW v AS SELECT 1;"]


def test_begin_case_and_end_outside_a_routine_do_not_hold_a_statement_open():
    """Only a CREATE FUNCTION or PROCEDURE has a body (as psql tells them): a view's CASE ... END, a
    column named begin, a transaction's BEGIN end where their `;` is."""
    view = b"\nCREATE VIEW v AS SELECT CASE WHEN true THEN 1 END AS x;"
    table = b"\nCREATE TABLE t (begin int, \"end\" int);"
    begin = b"\nBEGIN;"
    plpgsql = b"\nCREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$;"
    statements = [view, table, begin, plpgsql, view]
    assert split_statements(b"".join(statements) + b"\n") == statements


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



def test_a_script_that_cannot_be_cut_is_restored_the_pg_restore_way(server, tmp_path, monkeypatch):
    """As with a psql command in the script: nothing is sent in batches, pg_restore restores the
    section into the database, and the restore is what the source is."""
    repo = Repository.init(f"file://{tmp_path / 'repo'}", password="pw")
    info = ConnectionInfo(server.host, server.port, server.superuser, server.password)
    rp = backup_postgres(repo, info, databases=["pre_src"])["restore_point_id"]
    real_split = predata.split_statements

    def with_a_psql_command(script):
        assert real_split(script) is not None
        return real_split(b"\\connect other\n" + script)

    monkeypatch.setattr(predata, "split_statements", with_a_psql_command)
    monkeypatch.setattr(predata, "_batches", lambda statements: pytest.fail("batches sent"))
    runs = tool_runs(monkeypatch)
    result = restore_postgres(repo, rp, info, database="pre_src", target_database="pre_uncut", jobs=2)

    assert result["warnings"] == []
    assert [r for r in runs if "--section=pre-data" in r and "--file=-" in r], "the script was not written"
    assert [r for r in runs if "--section=pre-data" in r and "--file=-" not in r], "not started over"
    assert schema_dump(server, "pre_uncut") == schema_dump(server, "pre_src")
    assert table_checksums(server, "pre_uncut") == table_checksums(server, "pre_src")
    server.drop_database("pre_uncut")


TRICKY_SCHEMA = r"""
    CREATE SCHEMA "sché;ma";
    COMMENT ON SCHEMA "sché;ma" IS 'un schéma; « $$ » -- /* pas un commentaire';
    CREATE TYPE "sché;ma"."humeur;" AS ENUM ('triste;', 'ça va', 'it''s', '$_$', 'a\b', E'deux\nlignes;');
    CREATE DOMAIN "sché;ma".d AS text CHECK (VALUE <> 'x;y' AND VALUE !~ '^/\*;');
    CREATE FUNCTION "sché;ma"."fün;"(a int) RETURNS text LANGUAGE plpgsql AS $body$
    DECLARE s text := 'a;b'; -- un commentaire; é
    BEGIN
      /* imbriqué /* ; */ toujours; */
      s := s || $x$;$x$ || $é$;€;$é$ || E'\';' || '日本語;' || '$_$;';
      RETURN s;
    END;
    $body$;
    CREATE FUNCTION "sché;ma".atomic(x int) RETURNS text LANGUAGE sql IMMUTABLE
    BEGIN ATOMIC
      SELECT CASE WHEN x > 0 THEN 'plus; é' ELSE 'moins;' END;
    END;
    CREATE TABLE "sché;ma"."tàble;" (id int, "côl;""q" text DEFAULT 'dé;faut', h "sché;ma"."humeur;",
                                     v text GENERATED ALWAYS AS ("sché;ma".atomic(id)) STORED);
    CREATE PROCEDURE "sché;ma".p(x int) LANGUAGE sql
    BEGIN ATOMIC
      INSERT INTO "sché;ma"."tàble;" (id) VALUES (x);
      INSERT INTO "sché;ma"."tàble;" (id) VALUES (x + 1);
    END;
    CREATE VIEW "sché;ma"."vüe;" AS SELECT id, 'lit;é' AS l, $$dollar; ü$$ AS d FROM "sché;ma"."tàble;"
      WHERE "côl;""q" <> ';' AND h <> 'triste;';
    COMMENT ON COLUMN "sché;ma"."tàble;"."côl;""q" IS E'ligne\nsuivante; 😀 ''';
"""


def test_each_cut_is_one_whole_statement_to_the_server(server, tmp_path):
    """The script `pg_restore -f` writes for a schema with tricky bodies, cut, and each piece sent on its
    own through the extended protocol, which takes exactly one statement: a piece holding two, or half
    of one, fails. What they build is what `pg_restore --section=pre-data` builds."""
    for name in ("pre_tricky", "pre_tricky_cut", "pre_tricky_control"):
        server.drop_database(name)
        server.create_database(name)
    server.psql(TRICKY_SCHEMA, dbname="pre_tricky")
    env = dict(os.environ, PGPASSWORD=server.password)
    conn = ["-h", server.host, "-p", str(server.port), "-U", server.superuser]
    dump, script_path = tmp_path / "tricky.dump", tmp_path / "tricky.sql"
    subprocess.run([f"{server.bin_dir}/pg_dump", *conn, "-Fc", "-f", dump, "pre_tricky"], env=env, check=True)
    subprocess.run([f"{server.bin_dir}/pg_restore", "--section=pre-data", "-f", script_path, dump], check=True)
    subprocess.run([f"{server.bin_dir}/pg_restore", *conn, "--section=pre-data", "-d", "pre_tricky_control",
                    "--exit-on-error", dump], env=env, check=True)
    script = script_path.read_bytes()

    statements = split_statements(script)
    # Joined, they are the script from after its \restrict line to its last statement's `;`.
    body = script[script.index(b"\n", script.index(b"\\restrict ")):script.rindex(b";") + 1]
    assert b"".join(statements) == body
    assert len(statements) > 20 and all(s.rstrip().endswith(b";") for s in statements)
    with server.connect("pre_tricky_cut") as conn:
        conn.autocommit = True
        for stmt in statements:
            conn.execute(stmt, binary=True)  # binary: the extended protocol, one statement only
    assert schema_dump(server, "pre_tricky_cut") == schema_dump(server, "pre_tricky_control")
    for name in ("pre_tricky", "pre_tricky_cut", "pre_tricky_control"):
        server.drop_database(name)
