"""`restore postgres --replace` is atomic for the user: the restore goes into a temporary database, is
verified, then swapped in by renames; on any failure the target is exactly as it was, and sessions are
warned about before they are terminated. Against a real PostgreSQL server."""

from __future__ import annotations

import contextlib
import pathlib

import psycopg
import pytest
from rdsbackup import cli
from rdsbackup.errors import CorruptObject
from rdsbackup.postgres import ConnectionInfo, backup_postgres, restore_postgres
from rdsbackup.postgres import replace as replace_module
from rdsbackup.postgres.errors import RestoreFailed
from rdsbackup.postgres.replace import side_name
from rdsbackup.repository import Repository

from tests.support.postgres_server import shared_server, table_checksums

pytestmark = pytest.mark.postgres
PASSPHRASE = "pw"


@pytest.fixture(scope="module")
def server():
    return shared_server()


@pytest.fixture
def superuser(server) -> ConnectionInfo:
    return ConnectionInfo(server.host, server.port, server.superuser, server.password)


@pytest.fixture
def backed_up(server, superuser, tmp_path):
    """Database rep_src backed up, then changed (rows written since the backup)."""
    server.drop_database("rep_src")
    server.create_database("rep_src")
    server.psql("CREATE TABLE items (id int PRIMARY KEY, name text);"
                "INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 2000) i;", dbname="rep_src")
    url = f"file://{tmp_path}/repo"
    Repository.init(url, password=PASSPHRASE)
    repo = Repository.open(url, password=PASSPHRASE)
    rp = backup_postgres(repo, superuser, databases=["rep_src"], source_id="rep", jobs=2)["restore_point_id"]
    server.psql("INSERT INTO items SELECT i, 'later ' || i FROM generate_series(2001, 2500) i;", dbname="rep_src")
    yield repo, rp
    server.drop_database("rep_src")


def side_databases(server) -> list[str]:
    return [r[0] for r in server.execute("SELECT datname FROM pg_database WHERE datname LIKE '%rdsbackup%'")]


def test_replace_swaps_in_a_verified_copy_warns_about_sessions_and_drops_the_old_one(server, superuser, backed_up):
    repo, rp = backed_up
    session = server.connect("rep_src")  # a client still connected to the database being replaced
    warnings: list[str] = []
    try:
        result = replace_module.replace_postgres(repo, rp, superuser, database="rep_src", warn=warnings.append)
    finally:
        with contextlib.suppress(psycopg.Error):
            session.close()
    assert len(warnings) == 1 and "terminating 1 session(s)" in warnings[0] and "'rep_src'" in warnings[0]
    [db] = result["databases"]
    assert db["target"] == "rep_src" and "_rdsbackup_replaced_" in db["replaced"]
    assert server.execute("SELECT count(*) FROM items", dbname="rep_src") == [(2000,)]
    assert side_databases(server) == []


def test_a_damaged_restore_point_leaves_the_target_exactly_as_it_was(server, superuser, backed_up):
    repo, rp = backed_up
    before = table_checksums(server, "rep_src")
    index = repo._index(reload=True)
    for pack_no, offset, _stored, _raw in index.blocks:  # every block: whatever the restore reads is damaged
        pid = index.packs[pack_no].hex()
        path = pathlib.Path(repo.backend._path(f"data/{pid[:2]}/{pid}"))
        raw = bytearray(path.read_bytes())
        raw[offset + 20] ^= 0x01
        path.write_bytes(bytes(raw))
    with pytest.raises((CorruptObject, RestoreFailed)):
        restore_postgres(Repository.open(repo.url, password=PASSPHRASE), rp, superuser, database="rep_src",
                         replace=True)
    assert table_checksums(server, "rep_src") == before
    assert server.execute("SELECT count(*) FROM items", dbname="rep_src") == [(2500,)]
    assert side_databases(server) == []


def test_a_copy_that_does_not_verify_is_not_swapped_in(server, superuser, backed_up, monkeypatch):
    repo, rp = backed_up
    before = table_checksums(server, "rep_src")

    def differs(info, entry, dbname):
        return {"differences": [{"table": "public.items", "reason": "1999 rows, the restore point recorded 2000"}]}

    monkeypatch.setattr("rdsbackup.postgres.validate.validate_database", differs)
    with pytest.raises(RestoreFailed, match=r"not replaced.*public.items.*'rep_src' is unchanged"):
        restore_postgres(repo, rp, superuser, database="rep_src", replace=True)
    assert table_checksums(server, "rep_src") == before and side_databases(server) == []


def test_a_failed_second_rename_puts_the_old_database_back(server, superuser, backed_up, monkeypatch):
    repo, rp = backed_up
    before = table_checksums(server, "rep_src")
    real_side_name = replace_module.side_name

    def clashing_side_name(target, marker, suffix):
        name = real_side_name(target, marker, suffix)
        if marker == replace_module.RESTORING:
            # The restored copy cannot be renamed if its name is not the one the swap expects.
            monkeypatch.setattr(replace_module, "_swap", failing_swap)
        return name

    real_swap = replace_module._swap

    def failing_swap(info, target, temporary, old, warn):
        return real_swap(info, target, temporary + "_gone", old, warn)

    monkeypatch.setattr(replace_module, "side_name", clashing_side_name)
    with pytest.raises(RestoreFailed, match=r"renaming the restored copy failed.*is unchanged"):
        restore_postgres(repo, rp, superuser, database="rep_src", replace=True)
    assert table_checksums(server, "rep_src") == before and side_databases(server) == []


def test_side_names_fit_in_a_postgres_identifier():
    name = side_name("x" * 80, "_rdsbackup_replaced_", "20260101000000")
    assert len(name.encode()) == 63 and name.endswith("_rdsbackup_replaced_20260101000000")


def test_cli_replace_warns_on_stderr_before_terminating(server, backed_up, monkeypatch, capsys):
    repo, rp = backed_up
    monkeypatch.setenv("RDSBACKUP_PASSWORD", PASSPHRASE)
    monkeypatch.setenv("DBPW", server.password)
    session = server.connect("rep_src")
    try:
        code = cli.main(["restore", "postgres", "--repo", repo.url, "--restore-point", rp, "--host", server.host,
                         "--port", str(server.port), "--user", server.superuser, "--password-env", "DBPW",
                         "--database", "rep_src", "--replace"])
    finally:
        with contextlib.suppress(psycopg.Error):
            session.close()
    err = capsys.readouterr().err
    assert code == 0, err
    assert "warning: terminating 1 session(s) connected to database 'rep_src'" in err
    assert server.execute("SELECT count(*) FROM items", dbname="rep_src") == [(2000,)]
