"""The `rdsbackup` console script, run as a subprocess through its installed entry point (the same
one the worker container runs), against a real PostgreSQL server and a file:// repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.postgres_server import shared_server

pytestmark = pytest.mark.postgres

REPO_PASSPHRASE = "cli repository passphrase"
DB_PASSWORD_VAR = "SOURCE_DB_PASSWORD"


@pytest.fixture(scope="module")
def server():
    server = shared_server()
    for name in ("cli_src", "cli_copy", "cli_other"):
        server.drop_database(name)
    server.create_database("cli_src")
    server.psql(
        "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric);"
        "INSERT INTO items SELECT i, 'item ' || i, i * 0.25 FROM generate_series(1, 3000) i;"
        "CREATE TABLE log (line text);"
        "INSERT INTO log SELECT 'line ' || i FROM generate_series(1, 500) i;", dbname="cli_src")
    return server


@pytest.fixture(scope="module")
def rdsbackup() -> str:
    path = shutil.which("rdsbackup")
    if not path:
        pytest.fail("the rdsbackup console script is not installed (pip install -e ./worker_image)")
    return path


def run(rdsbackup: str, *args: str, env: dict | None = None, password: str | None = None,
        repo_passphrase: str = REPO_PASSPHRASE) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, RDSBACKUP_PASSWORD=repo_passphrase, **(env or {}))
    if password is not None:
        full_env[DB_PASSWORD_VAR] = password
    return subprocess.run([rdsbackup, *args], capture_output=True, text=True, env=full_env, timeout=120)


def db_args(server, *, host: str | None = None, port: int | None = None) -> list[str]:
    return ["--host", host or server.host, "--port", str(port or server.port), "--user", server.superuser,
            "--password-env", DB_PASSWORD_VAR]


def assert_one_line_failure(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rdsbackup: error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def repo_url(tmp_path_factory, rdsbackup) -> str:
    url = f"file://{tmp_path_factory.mktemp('cli-repo')}"
    result = run(rdsbackup, "repo", "init", "--repo", url)
    assert result.returncode == 0, result.stderr
    return url


@pytest.fixture(scope="module")
def backup(server, rdsbackup, repo_url) -> dict:
    result = run(rdsbackup, "backup", "postgres", "--repo", repo_url, *db_args(server), "--database", "cli_src",
                 "--source-id", "cli-db", "--json", password=server.password)
    assert result.returncode == 0, result.stderr
    assert server.password not in result.stdout + result.stderr
    return json.loads(result.stdout)


def test_backup_json_prints_one_document_with_the_restore_point_id(backup):
    assert backup["restore_point_id"]
    assert backup["source_id"] == "cli-db"
    assert [d["name"] for d in backup["databases"]] == ["cli_src"]
    tables = {t["name"]: t for t in backup["databases"][0]["tables"]}
    assert tables["items"]["rows"] == 3000 and tables["log"]["rows"] == 500


def test_list_shows_the_restore_point(rdsbackup, repo_url, backup):
    result = run(rdsbackup, "list", "--repo", repo_url, "--json")
    assert result.returncode == 0, result.stderr
    ids = [p["id"] for p in json.loads(result.stdout)]
    assert backup["restore_point_id"] in ids
    text = run(rdsbackup, "list", "--repo", repo_url, "--source-id", "cli-db")
    assert text.returncode == 0 and backup["restore_point_id"] in text.stdout


def test_restore_then_verify(server, rdsbackup, repo_url, backup):
    rp = backup["restore_point_id"]
    result = run(rdsbackup, "restore", "postgres", "--repo", repo_url, "--restore-point", rp, *db_args(server),
                 "--database", "cli_src", "--target-database", "cli_copy", password=server.password)
    assert result.returncode == 0, result.stderr
    assert "restored database cli_src as cli_copy" in result.stdout
    assert server.execute("SELECT count(*), sum(price) FROM items", dbname="cli_copy") == [(3000, 1125375)]

    again = run(rdsbackup, "restore", "postgres", "--repo", repo_url, "--restore-point", rp, *db_args(server),
                "--database", "cli_src", "--target-database", "cli_copy", password=server.password)
    assert_one_line_failure(again, "'cli_copy' already exists", "--replace")
    replaced = run(rdsbackup, "restore", "postgres", "--repo", repo_url, "--restore-point", rp,
                   *db_args(server), "--database", "cli_src", "--target-database", "cli_copy", "--replace",
                   password=server.password)
    assert replaced.returncode == 0, replaced.stderr

    for extra in ([], ["--read-data"], ["--restore-point", rp, "--read-data"]):
        verified = run(rdsbackup, "verify", "--repo", repo_url, *extra)
        assert verified.returncode == 0, verified.stderr


def test_forget_keeps_the_last_and_prunes(server, rdsbackup, tmp_path):
    url = f"file://{tmp_path / 'repo'}"
    assert run(rdsbackup, "repo", "init", "--repo", url).returncode == 0
    ids = []
    for _ in range(2):
        out = run(rdsbackup, "backup", "postgres", "--repo", url, *db_args(server), "--database", "cli_src",
                  "--json", password=server.password)
        assert out.returncode == 0, out.stderr
        ids.append(json.loads(out.stdout)["restore_point_id"])
    result = run(rdsbackup, "forget", "--repo", url, "--keep-last", "1")
    assert result.returncode == 0, result.stderr
    listed = [p["id"] for p in json.loads(run(rdsbackup, "list", "--repo", url, "--json").stdout)]
    assert listed == [ids[1]]
    assert run(rdsbackup, "verify", "--repo", url, "--read-data").returncode == 0


def test_usage_errors_exit_2(rdsbackup, repo_url):
    assert run(rdsbackup).returncode == 2
    assert run(rdsbackup, "backup", "postgres", "--repo", repo_url, "--host", "h").returncode == 2
    assert run(rdsbackup, "forget", "--repo", repo_url).returncode == 2
    assert run(rdsbackup, "forget", "--repo", repo_url, "--keep-last", "0").returncode == 2


def test_sqlserver_backup_without_its_options_is_a_usage_error(rdsbackup, repo_url):
    # backup sqlserver is implemented (tests/worker/test_sqlserver_*.py); archive is tested in test_archive_cli.py.
    assert run(rdsbackup, "backup", "sqlserver", "--repo", repo_url).returncode == 2


def test_wrong_database_password(server, rdsbackup, repo_url):
    result = run(rdsbackup, "backup", "postgres", "--repo", repo_url, *db_args(server),
                 password="not-the-password")
    line = assert_one_line_failure(result, "authentication failed for user 'postgres'")
    assert "not-the-password" not in line


def test_unset_password_variable(server, rdsbackup, repo_url):
    env = {k: v for k, v in os.environ.items() if k != DB_PASSWORD_VAR}
    result = subprocess.run([rdsbackup, "backup", "postgres", "--repo", repo_url, *db_args(server)],
                            capture_output=True, text=True, env=dict(env, RDSBACKUP_PASSWORD=REPO_PASSPHRASE))
    assert_one_line_failure(result, DB_PASSWORD_VAR, "is not set")


def test_unreachable_host(server, rdsbackup, repo_url):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    result = run(rdsbackup, "backup", "postgres", "--repo", repo_url, *db_args(server, port=closed),
                 password=server.password)
    assert_one_line_failure(result, f"cannot reach PostgreSQL at {server.host}:{closed}")


def test_unknown_database(server, rdsbackup, repo_url):
    result = run(rdsbackup, "backup", "postgres", "--repo", repo_url, *db_args(server), "--database", "nope",
                 password=server.password)
    assert_one_line_failure(result, "database 'nope' does not exist")


def test_wrong_repository_key(server, rdsbackup, repo_url, backup):
    result = run(rdsbackup, "list", "--repo", repo_url, repo_passphrase="wrong passphrase")
    assert_one_line_failure(result)
    restore = run(rdsbackup, "restore", "postgres", "--repo", repo_url, "--restore-point",
                  backup["restore_point_id"], *db_args(server), "--target-database", "cli_other",
                  password=server.password, repo_passphrase="wrong passphrase")
    assert_one_line_failure(restore)
    assert server.execute("SELECT 1 FROM pg_database WHERE datname = 'cli_other'") == []


def _repo_with_one_backup(server, rdsbackup, tmp_path) -> tuple[str, Path, str]:
    root = tmp_path / "repo"
    url = f"file://{root}"
    assert run(rdsbackup, "repo", "init", "--repo", url).returncode == 0
    out = run(rdsbackup, "backup", "postgres", "--repo", url, *db_args(server), "--database", "cli_src",
              "--json", password=server.password)
    assert out.returncode == 0, out.stderr
    return url, root, json.loads(out.stdout)["restore_point_id"]


def _packs(root: Path) -> list[Path]:
    packs = sorted(p for p in (root / "data").rglob("*") if p.is_file())
    assert packs
    return packs


def test_corrupt_pack_is_named_by_verify_and_restore(server, rdsbackup, tmp_path):
    url, root, rp = _repo_with_one_backup(server, rdsbackup, tmp_path)
    for pack in _packs(root):
        data = bytearray(pack.read_bytes())
        data[len(data) // 2] ^= 0xFF
        pack.write_bytes(bytes(data))
    verify = run(rdsbackup, "verify", "--repo", url, "--read-data")
    assert_one_line_failure(verify, rp, "data/")
    server.drop_database("cli_other")
    restore = run(rdsbackup, "restore", "postgres", "--repo", url, "--restore-point", rp, *db_args(server),
                  "--target-database", "cli_other", password=server.password)
    assert_one_line_failure(restore, rp, "data/")


def test_missing_pack_is_named_by_verify_and_restore(server, rdsbackup, tmp_path):
    url, root, rp = _repo_with_one_backup(server, rdsbackup, tmp_path)
    for pack in _packs(root):
        pack.unlink()
    verify = run(rdsbackup, "verify", "--repo", url)
    assert_one_line_failure(verify, rp, "data/", "missing")
    server.drop_database("cli_other")
    restore = run(rdsbackup, "restore", "postgres", "--repo", url, "--restore-point", rp, *db_args(server),
                  "--target-database", "cli_other", password=server.password)
    assert_one_line_failure(restore, rp, "data/")
