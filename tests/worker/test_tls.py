"""TLS to the database: with `$RDSBACKUP_CA_BUNDLE` set (as in the worker image) every connection,
psycopg's and pg_dump/pg_restore/pg_dumpall's, uses `sslmode=verify-full` against that bundle.

The server here accepts TCP clients only over TLS (`hostssl` in pg_hba.conf), with a certificate for
`localhost`/`127.0.0.1` signed by a throwaway test CA."""

from __future__ import annotations

import pytest
from rdsbackup import cli
from rdsbackup.postgres import ConnectionInfo, TlsFailed, backup_postgres, restore_postgres
from rdsbackup.postgres.errors import ToolFailed
from rdsbackup.postgres.tools import run_tool
from rdsbackup.repository import Repository

from tests.support.postgres_server import (
    make_test_certificates,
    schema_dump,
    shared_server,
    shared_tls_server,
    table_checksums,
)

pytestmark = pytest.mark.postgres

PASSPHRASE = "tls test passphrase"


@pytest.fixture(scope="module")
def server():
    server = shared_tls_server()
    for name in ("tls_src", "tls_copy"):
        server.drop_database(name)
    server.create_database("tls_src")
    server.psql("CREATE TABLE t (id int PRIMARY KEY, v text);"
                "INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 2000) i;", dbname="tls_src")
    yield server
    # the server is shared: a database the next tests' roles cannot connect to would fail their backups
    for name in ("tls_src", "tls_copy"):
        server.drop_database(name)


@pytest.fixture
def wrong_ca(tmp_path):
    ca_pem, _cert, _key = make_test_certificates(ca_name="some other CA")
    path = tmp_path / "other-ca.pem"
    path.write_bytes(ca_pem)
    return str(path)


def info_for(server, host: str | None = None, **kw) -> ConnectionInfo:
    return ConnectionInfo(host=host or server.host, port=server.port, user=server.superuser,
                          password=server.password, **kw)


def test_the_ca_bundle_variable_means_verify_full_for_psycopg_and_the_client_programs(server, monkeypatch):
    monkeypatch.setenv("RDSBACKUP_CA_BUNDLE", server.ca_file)
    info = info_for(server)
    assert (info.ssl_mode, info.ca_bundle) == ("verify-full", server.ca_file)
    env = info.tool_env("tls_src")
    assert env["PGSSLMODE"] == "verify-full" and env["PGSSLROOTCERT"] == server.ca_file
    with info.connect("tls_src") as conn:
        assert conn.info.pgconn.ssl_in_use
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
    # Explicit settings win over the variable; without either, libpq's defaults apply.
    assert info_for(server, ssl_mode="require").ca_bundle == server.ca_file
    assert info_for(server, ssl_mode="disable").ca_bundle is None
    monkeypatch.delenv("RDSBACKUP_CA_BUNDLE")
    assert (info_for(server).ssl_mode, info_for(server).ca_bundle) == (None, None)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_backup_and_restore_over_verified_tls(server, tmp_path, monkeypatch, host):
    monkeypatch.setenv("RDSBACKUP_CA_BUNDLE", server.ca_file)
    repo = Repository.init(f"file://{tmp_path / 'repo'}", password=PASSPHRASE)
    info = info_for(server, host=host)
    result = backup_postgres(repo, info, databases=["tls_src"], source_id="tls")
    assert result["warnings"] == []  # globals (pg_dumpall) came over TLS too
    server.drop_database("tls_copy")
    restore_postgres(repo, result["restore_point_id"], info, database="tls_src", target_database="tls_copy")
    assert table_checksums(server, "tls_copy") == table_checksums(server, "tls_src")
    assert schema_dump(server, "tls_copy") == schema_dump(server, "tls_src")


def test_cli_backup_with_ca_bundle_flag(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RDSBACKUP_PASSWORD", PASSPHRASE)
    monkeypatch.setenv("SRC_PW", server.password)
    url = f"file://{tmp_path / 'repo'}"
    assert cli.main(["repo", "init", "--repo", url]) == 0
    code = cli.main(["backup", "postgres", "--repo", url, "--host", "localhost", "--port", str(server.port),
                     "--user", server.superuser, "--password-env", "SRC_PW", "--database", "tls_src",
                     "--ca-bundle", server.ca_file, "--ssl-mode", "verify-full", "--json"])
    assert code == 0, capsys.readouterr().err


def test_a_wrong_ca_bundle_fails_clearly(server, tmp_path, monkeypatch, capsys, wrong_ca):
    monkeypatch.setenv("RDSBACKUP_CA_BUNDLE", wrong_ca)
    repo = Repository.init(f"file://{tmp_path / 'repo'}", password=PASSPHRASE)
    with pytest.raises(TlsFailed) as err:
        backup_postgres(repo, info_for(server), databases=["tls_src"], source_id="tls")
    message = str(err.value)
    assert "certificate verify failed" in message and wrong_ca in message and "verify-full" in message
    assert server.password not in message
    assert repo.list_restore_points() == []

    # The same through the CLI: one line, exit 1.
    monkeypatch.setenv("RDSBACKUP_PASSWORD", PASSPHRASE)
    monkeypatch.setenv("SRC_PW", server.password)
    code = cli.main(["backup", "postgres", "--repo", repo.url, "--host", server.host, "--port", str(server.port),
                     "--user", server.superuser, "--password-env", "SRC_PW", "--database", "tls_src"])
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err_lines) == 1 and "certificate verify failed" in err_lines[0], err_lines


def test_the_client_programs_verify_too(server, wrong_ca):
    # pg_dump gets the settings through its environment: a wrong CA makes it fail as well.
    info = info_for(server, ca_bundle=wrong_ca, ssl_mode="verify-full")
    with pytest.raises(ToolFailed, match="certificate verify failed"):
        run_tool("pg_dump", ["--schema-only"], info, dbname="tls_src")
    good = info_for(server, ca_bundle=server.ca_file, ssl_mode="verify-full")
    run_tool("pg_dump", ["--schema-only"], good, dbname="tls_src")


def test_missing_bundle_and_a_server_without_tls_fail_clearly(tmp_path):
    plain = shared_server()  # no TLS at all
    missing = str(tmp_path / "absent.pem")
    with pytest.raises(TlsFailed, match="does not exist"):
        info_for(plain, ca_bundle=missing, ssl_mode="verify-full").connect("postgres")
    ca_pem, _c, _k = make_test_certificates()
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(ca_pem)
    with pytest.raises(TlsFailed, match="does not support SSL"):
        info_for(plain, ca_bundle=str(bundle), ssl_mode="verify-full").connect("postgres")


def test_a_server_that_requires_tls_names_it_when_tls_is_off(server):
    with pytest.raises(TlsFailed, match="requires TLS"):
        info_for(server, ssl_mode="disable").connect("postgres")
