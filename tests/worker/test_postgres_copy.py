"""How table rows leave the server: large tables through a `psql` child inside the exported snapshot
(read in large blocks), small ones through psycopg; both store the same bytes. `--no-key-order`
streams physical order. Run against the plain and the TLS-only test servers."""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Iterator

import psycopg
import pytest
from rdsbackup import cli
from rdsbackup.postgres import BackupFailed, ConnectionInfo, backup_postgres, restore_postgres
from rdsbackup.postgres import backup as backup_module
from rdsbackup.postgres import tools as tools_module
from rdsbackup.postgres.errors import ToolFailed
from rdsbackup.postgres.snapshot import SnapshotSession
from rdsbackup.repository import Repository

from tests.support.postgres_server import (
    SAMPLE_ROLE,
    create_sample_database,
    ensure_role,
    schema_dump,
    shared_server,
    shared_tls_server,
    table_checksums,
)

pytestmark = pytest.mark.postgres

PASSPHRASE = "copy test passphrase"


@pytest.fixture(scope="module")
def server():
    server = shared_server()
    ensure_role(server, SAMPLE_ROLE)
    for name in ("copy_src", "copy_dst"):
        server.drop_database(name)
    create_sample_database(server, "copy_src")
    # Values that COPY escapes (tabs, newlines, backslashes, NULL) and text beyond ASCII.
    server.psql("CREATE TABLE public.odd (id int PRIMARY KEY, v text);"
                "INSERT INTO public.odd VALUES (3, E'tab\\there'), (1, E'line\\nbreak\\\\'), (2, NULL),"
                " (4, 'grüße ✓');", dbname="copy_src")
    return server


def info_for(server, **kw) -> ConnectionInfo:
    return ConnectionInfo(server.host, server.port, server.superuser, server.password, **kw)


def _streams(repo, result) -> dict:
    db = result["databases"][0]
    return {(t["schema"], t["name"]): (b"".join(repo.open_stream(t["stream"])), t["rows"], t["bytes"], t["order"],
                                       t["digest"])
            for t in db["tables"]}


def test_psql_and_psycopg_store_the_same_streams(server, tmp_path, monkeypatch):
    repo = Repository.init(f"file://{tmp_path / 'repo'}", password=PASSPHRASE)
    info = info_for(server)
    through_psycopg = backup_postgres(repo, info, databases=["copy_src"], jobs=2)
    monkeypatch.setattr(backup_module, "PSQL_COPY_MIN_BYTES", 0)
    through_psql = backup_postgres(repo, info, databases=["copy_src"], jobs=2)
    a, b = _streams(repo, through_psycopg), _streams(repo, through_psql)
    assert a == b
    assert a[("public", "odd")][1] == 4 and a[("app", "orders")][1] == 20000
    assert a[("app", "orders")][3] == "primary-key"
    # Nothing new but the metadata: every chunk of the second backup was already stored.
    tables = through_psql["databases"][0]["tables"]
    assert sum(t["stream"]["new_bytes"] for t in tables) == 0

    server.drop_database("copy_dst")
    restore_postgres(repo, through_psql["restore_point_id"], info, database="copy_src", target_database="copy_dst")
    assert table_checksums(server, "copy_dst") == table_checksums(server, "copy_src")
    assert schema_dump(server, "copy_dst") == schema_dump(server, "copy_src")


def test_no_key_order_streams_physical_order(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(backup_module, "PSQL_COPY_MIN_BYTES", 0)
    monkeypatch.setenv("RDSBACKUP_PASSWORD", PASSPHRASE)
    monkeypatch.setenv("SRC_PW", server.password)
    url = f"file://{tmp_path / 'repo'}"
    assert cli.main(["repo", "init", "--repo", url]) == 0
    capsys.readouterr()
    code = cli.main(["backup", "postgres", "--repo", url, "--host", server.host, "--port", str(server.port),
                     "--user", server.superuser, "--password-env", "SRC_PW", "--database", "copy_src",
                     "--no-key-order", "--json"])
    assert code == 0, capsys.readouterr().err
    repo = Repository.open(url, password=PASSPHRASE)
    rp = repo.list_restore_points()[0]
    rp_id = rp.get("id", rp.get("restore_point_id"))
    meta = repo.load_manifest(rp_id)
    meta = meta.get("metadata", meta)
    odd = next(t for t in meta["databases"][0]["tables"] if t["name"] == "odd")
    assert odd["order"] == "physical" and odd["key"] == ["id"]
    ids = [int(line.split(b"\t", 1)[0]) for line in b"".join(repo.open_stream(odd["stream"])).splitlines()]
    assert ids == [3, 1, 2, 4]  # insertion (physical) order, not key order
    server.drop_database("copy_dst")
    restore_postgres(repo, rp_id, info_for(server), database="copy_src", target_database="copy_dst")
    assert table_checksums(server, "copy_dst") == table_checksums(server, "copy_src")


@contextlib.contextmanager
def psql_copy(server, sql_text: str, work_dir) -> Iterator[backup_module._PsqlCopy]:
    """A `psql` child running `sql_text` inside a snapshot exported from copy_src; closed afterwards."""
    info = info_for(server)
    session = SnapshotSession(info, "copy_src", "UTF8")
    session.begin([], lock_timeout_ms=0)
    try:
        child = backup_module._PsqlCopy(info, "copy_src", "UTF8", session.snapshot_id, sql_text, str(work_dir))
        try:
            yield child
        finally:
            child.close()
    finally:
        session.close()


def test_a_failing_psql_copy_fails_the_backup_with_the_servers_error(server, tmp_path):
    with psql_copy(server, "COPY public.no_such_table TO STDOUT", tmp_path) as child, pytest.raises(
            ToolFailed, match=r'relation "public\.no_such_table" does not exist'):
        list(child.blocks({}, backup_module.Reporter()))
    assert not list(tmp_path.iterdir())  # the script file is gone


def test_a_copy_that_psql_would_read_otherwise_counts_its_rows_and_leaves_no_file(server, tmp_path):
    """A string literal in the COPY: psql's `\\copy` would rewrite it, so the COPY is sent as it is and
    its rows are counted in the worker; no status file is made for it, none is left behind."""
    counts: dict = {}
    with psql_copy(server, "COPY (SELECT g, 'a  b' FROM generate_series(1, 3) g) TO STDOUT", tmp_path) as child:
        assert b"".join(child.blocks(counts, backup_module.Reporter())) == b"1\ta  b\n2\ta  b\n3\ta  b\n"
    assert counts["rows"] == 3
    assert not list(tmp_path.iterdir())


def test_psql_writes_copy_rows_in_large_blocks(server, tmp_path):
    """psql's stdout gets a buffer as large as our reads (stdbuf): a few write(2) calls per MiB, not one
    per 4 KiB. The rows come out whole and counted."""
    counts: dict = {}
    sql_text = "COPY (SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g) TO STDOUT"
    with psql_copy(server, sql_text, tmp_path) as child:
        data = b"".join(child.blocks(counts, backup_module.Reporter()))
        assert child.proc.args[:2] == [shutil.which("stdbuf"), f"--output={backup_module.PSQL_READ}"]
    assert counts == {"rows": 20000, "bytes": len(data)}
    assert data.splitlines()[-1] == b"20000\t" + b"x" * 200


def test_psql_reports_row_counts_and_copies_tables_of_any_name(server, tmp_path, monkeypatch):
    """Large tables' row counts come from the COPY's command tag (psql's `\\copy ... TO pstdout`, its
    status in a file), not from counting newlines. Names that need quoting go through `\\copy` as the
    server reads them; a name `\\copy` cannot take (a newline) is copied as before and its newlines
    counted. Both give what psycopg gives."""
    server.drop_database("copy_names")
    server.create_database("copy_names")
    server.psql('CREATE SCHEMA "odd schema.(x)";'
                'CREATE TABLE "odd schema.(x)"."t ""q"", (p)" ("id  key" int PRIMARY KEY, "a,b" text,'
                ' "ünï ✓" int, "select" text);'
                'INSERT INTO "odd schema.(x)"."t ""q"", (p)" SELECT g, E\'v\\t\' || g, -g, NULL'
                ' FROM generate_series(1, 3000) g;'
                'CREATE TABLE public."new\nline" ("col\nnl" int PRIMARY KEY, v text);'
                "INSERT INTO public.\"new\nline\" SELECT g, 'x' FROM generate_series(1, 7) g;"
                # no key: physical order, the order-independent digest, fed from psql's reads
                "CREATE TABLE public.keyless (v text);"
                "INSERT INTO public.keyless SELECT repeat(md5(g::text), 8) FROM generate_series(1, 5000) g;",
                dbname="copy_names")
    reported = []
    real_reported_rows = backup_module._PsqlCopy._reported_rows

    def reported_rows(self):
        reported.append(real_reported_rows(self))
        return reported[-1]

    monkeypatch.setattr(backup_module._PsqlCopy, "_reported_rows", reported_rows)
    repo = Repository.init(f"file://{tmp_path / 'repo'}", password=PASSPHRASE)
    info = info_for(server)
    try:
        through_psycopg = _streams(repo, backup_postgres(repo, info, databases=["copy_names"]))
        monkeypatch.setattr(backup_module, "PSQL_COPY_MIN_BYTES", 0)
        through_psql = _streams(repo, backup_postgres(repo, info, databases=["copy_names"]))
    finally:
        server.drop_database("copy_names")
    assert through_psql == through_psycopg
    assert through_psql[("odd schema.(x)", 't "q", (p)')][1] == 3000
    assert through_psql[("public", "new\nline")][1] == 7
    assert through_psql[("public", "keyless")][1] == 5000
    assert through_psql[("public", "keyless")][3] == "physical"
    assert through_psql[("public", "keyless")][4].startswith("rowsum-")
    assert sorted(reported) == [3000, 5000]  # the table with a newline in its names counted its rows itself


def test_psql_copy_over_verified_tls(tmp_path, monkeypatch):
    server = shared_tls_server()
    for name in ("copy_tls_src", "copy_tls_dst"):
        server.drop_database(name)
    server.create_database("copy_tls_src")
    server.psql("CREATE TABLE t (id int PRIMARY KEY, v text);"
                "INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 2000) i;", dbname="copy_tls_src")
    monkeypatch.setenv("RDSBACKUP_CA_BUNDLE", server.ca_file)
    monkeypatch.setattr(backup_module, "PSQL_COPY_MIN_BYTES", 0)
    repo = Repository.init(f"file://{tmp_path / 'repo'}", password=PASSPHRASE)
    info = ConnectionInfo("localhost", server.port, server.superuser, server.password)
    assert info.ssl_mode == "verify-full"
    result = backup_postgres(repo, info, databases=["copy_tls_src"])
    assert result["databases"][0]["tables"][0]["rows"] == 2000
    try:
        restore_postgres(repo, result["restore_point_id"], info, database="copy_tls_src",
                         target_database="copy_tls_dst")
        assert table_checksums(server, "copy_tls_dst") == table_checksums(server, "copy_tls_src")
    finally:
        # the server is shared: a database the next tests' roles cannot connect to would fail their backups
        for name in ("copy_tls_src", "copy_tls_dst"):
            server.drop_database(name)


def test_backup_failed_names_the_table(server, tmp_path, monkeypatch):
    monkeypatch.setattr(backup_module, "PSQL_COPY_MIN_BYTES", 0)
    monkeypatch.setattr(backup_module, "copy_out_sql",
                        lambda table, key_order=True: f"COPY (SELECT 1/0 FROM {table.qualified}) TO STDOUT")
    repo = Repository.init(f"file://{tmp_path / 'repo'}", password=PASSPHRASE)
    with pytest.raises(BackupFailed, match=r"database 'copy_src', table .*division by zero"):
        backup_postgres(repo, info_for(server), databases=["copy_src"])
    assert repo.list_restore_points() == []


def test_a_failing_table_stops_the_schema_dump(server, tmp_path, monkeypatch):
    """pg_dump writes the schema while the tables are copied (it starts as soon as the snapshot is
    exported); when a table fails, pg_dump is killed with the copies rather than waited for."""
    went_on = tmp_path / "pg_dump-went-on"
    real_pg_dump = tools_module.pg_tool("pg_dump")
    slow = tmp_path / "pg_dump"
    slow.write_text(f"#!{sys.executable}\nimport os, sys, time\ntime.sleep(60)\n"
                    f"open({str(went_on)!r}, 'w').close()\n"
                    f"os.execv({real_pg_dump!r}, [{real_pg_dump!r}, *sys.argv[1:]])\n")
    slow.chmod(0o755)
    real_pg_tool = tools_module.pg_tool
    monkeypatch.setattr(tools_module, "pg_tool", lambda name: str(slow) if name == "pg_dump" else real_pg_tool(name))
    monkeypatch.setattr(backup_module, "copy_out_sql",
                        lambda table, key_order=True: f"COPY (SELECT 1/0 FROM {table.qualified}) TO STDOUT")
    repo = Repository.init(f"file://{tmp_path / 'repo'}", password=PASSPHRASE)
    with pytest.raises(BackupFailed, match=r"database 'copy_src', table .*division by zero"):
        backup_postgres(repo, info_for(server), databases=["copy_src"])
    assert not went_on.exists()
    assert repo.list_restore_points() == []


def test_psycopg_copy_gives_what_cursor_copy_gives(server):
    """`_copy_blocks` drives psycopg's protocol steps itself (one wait per block, not per row): the
    same bytes and row counts as `Cursor.copy`, in blocks of COPY_BLOCK, and the same errors, raised
    before the first row or in the middle of the rows, after which the connection is usable."""
    wide = "COPY (SELECT g, repeat('x', 100) FROM generate_series(1, 5000) g) TO STDOUT"
    with psycopg.connect(server.conninfo("copy_src"), autocommit=True) as conn:
        for sql_text in ("COPY public.odd TO STDOUT", wide, "COPY (SELECT 1 WHERE false) TO STDOUT",
                         'COPY app.orders TO STDOUT'):
            with conn.cursor() as cur:
                with cur.copy(sql_text) as copy:
                    expected = b"".join(bytes(row) for row in copy)
                rows = cur.rowcount
            counts: dict = {}
            blocks = list(backup_module._copy_blocks(conn, sql_text, counts, backup_module.Reporter()))
            assert b"".join(blocks) == expected
            assert counts == {"rows": rows, "bytes": len(expected)}
            assert all(len(b) >= backup_module.COPY_BLOCK for b in blocks[:-1]), sql_text
            if sql_text == wide:
                assert len(blocks) > 1 and rows == 5000
        failing = [("COPY public.no_such_table TO STDOUT", psycopg.errors.UndefinedTable),
                   ("COPY (SELECT g / (g - 4000) FROM generate_series(1, 5000) g) TO STDOUT",
                    psycopg.errors.DivisionByZero)]
        for sql_text, error in failing:
            with pytest.raises(error):
                list(backup_module._copy_blocks(conn, sql_text, {}, backup_module.Reporter()))
            with pytest.raises(error), conn.cursor() as cur, cur.copy(sql_text) as copy:
                list(copy)
            assert conn.execute("SELECT 1").fetchone() == (1,)
