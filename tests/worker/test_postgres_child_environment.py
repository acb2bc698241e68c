"""The PostgreSQL client programs (pg_dump, pg_dumpall, psql, pg_restore) get only what they need: no
repository passphrase, no `--password-env` variable, no AWS credentials, nothing else of the worker's
environment; the database password reaches them in a temporary 0600 password file, not PGPASSWORD.
Each program is run through a wrapper that records its environment, then runs the real program."""

from __future__ import annotations

import os
import stat

import pytest
from rdsbackup import cli
from rdsbackup.postgres import backup as backup_module
from rdsbackup.postgres.connection import pg_tool

from tests.support.postgres_server import shared_server

pytestmark = pytest.mark.postgres

PROGRAMS = ("pg_dump", "pg_dumpall", "psql", "pg_restore")
DB_PASSWORD = "db:pass\\word"  # a colon and a backslash: the password file escapes both


@pytest.fixture(scope="module")
def server():
    server = shared_server()
    for name in ("childenv_src", "childenv_copy"):
        server.drop_database(name)
    if not server.execute("SELECT 1 FROM pg_roles WHERE rolname = 'childenv_user'"):
        server.execute("CREATE ROLE childenv_user LOGIN SUPERUSER")
    with server.connect() as conn:
        literal = conn.execute("SELECT quote_literal(%s)", (DB_PASSWORD,)).fetchone()[0]
        conn.execute(f"ALTER ROLE childenv_user PASSWORD {literal}")
    server.create_database("childenv_src")
    server.psql("CREATE TABLE t (id int PRIMARY KEY, v text);"
                "INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 100) i;", dbname="childenv_src")
    return server


def _wrappers(tmp_path) -> tuple[str, str]:
    """A bin directory of wrappers that write `env` and the password file's mode to log/<program>.<pid>."""
    bin_dir, log_dir = tmp_path / "bin", tmp_path / "log"
    bin_dir.mkdir()
    log_dir.mkdir()
    for program in PROGRAMS:
        real = pg_tool(program)
        script = bin_dir / program
        script.write_text(
            "#!/bin/sh\n"
            f"out='{log_dir}'/{program}.$$\n"
            'env > "$out"\n'
            'if [ -n "$PGPASSFILE" ]; then echo "PASSFILE_MODE=$(stat -c %a "$PGPASSFILE")" >> "$out"; '
            'printf "PASSFILE_LINE=%s\\n" "$(cat "$PGPASSFILE")" >> "$out"; fi\n'
            f'exec "{real}" "$@"\n')
        script.chmod(0o755)
    return str(bin_dir), str(log_dir)


def _recorded(log_dir: str) -> dict[str, list[dict[str, str]]]:
    found: dict[str, list[dict[str, str]]] = {}
    for name in sorted(os.listdir(log_dir)):
        with open(os.path.join(log_dir, name)) as f:
            env = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
        found.setdefault(name.split(".")[0], []).append(env)
    return found


def test_client_programs_get_a_minimal_environment_and_a_password_file(server, tmp_path, monkeypatch, capsys):
    bin_dir, log_dir = _wrappers(tmp_path)
    monkeypatch.setenv("RDSBACKUP_PG_BIN", bin_dir)
    monkeypatch.setattr(backup_module, "PSQL_COPY_MIN_BYTES", 0)  # table rows through psql too
    monkeypatch.setenv("RDSBACKUP_PASSWORD", "repository passphrase")
    monkeypatch.setenv("SRC_DB_PW", DB_PASSWORD)
    monkeypatch.setenv("UNRELATED_SETTING", "worker only")
    monkeypatch.setenv("PGPASSWORD", "an operator's stray PGPASSWORD")
    url = f"file://{tmp_path / 'repo'}"
    assert cli.main(["repo", "init", "--repo", url]) == 0
    capsys.readouterr()
    common = ["--host", server.host, "--port", str(server.port), "--user", "childenv_user",
              "--password-env", "SRC_DB_PW"]
    assert cli.main(["backup", "postgres", "--repo", url, *common, "--database", "childenv_src", "--json"]) == 0, \
        capsys.readouterr().err
    rp_id = cli_json_id(capsys.readouterr().out)
    assert cli.main(["restore", "postgres", "--repo", url, "--restore-point", rp_id, *common,
                     "--database", "childenv_src", "--target-database", "childenv_copy",
                     "--include-globals"]) == 0, capsys.readouterr().err

    recorded = _recorded(log_dir)
    assert set(recorded) == set(PROGRAMS), recorded.keys()
    for program, envs in recorded.items():
        for env in envs:
            if "PGHOST" not in env:
                continue  # `pg_dump --version`: no connection
            leaked = sorted(k for k in env if k.startswith(("AWS_", "RDSBACKUP_")) or k in (
                "SRC_DB_PW", "UNRELATED_SETTING", "PGPASSWORD"))
            assert leaked == [], f"{program} got {leaked}"
            assert not any(DB_PASSWORD in v for k, v in env.items() if k != "PASSFILE_LINE"), program
            assert env["PASSFILE_MODE"] == "600", program
            assert env["PASSFILE_LINE"] == "*:*:*:*:db\\:pass\\\\word", program
            assert not os.path.exists(env["PGPASSFILE"]), f"{program}'s password file was left behind"
    assert server.execute("SELECT count(*) FROM t", dbname="childenv_copy") == [(100,)]
    # The schema's pg_dump runs without JIT (its catalog queries would be compiled for nothing),
    # and the backup worked with that setting.
    schema_dumps = [env for env in recorded["pg_dump"] if "PGHOST" in env]
    assert schema_dumps and all(env.get("PGOPTIONS") == "-c jit=off" for env in schema_dumps)


def cli_json_id(out: str) -> str:
    import json

    return json.loads(out)["restore_point_id"]


def test_password_file_is_private(server):
    from rdsbackup.postgres import ConnectionInfo

    info = ConnectionInfo(server.host, server.port, "childenv_user", DB_PASSWORD)
    with info.tool_environment("childenv_src") as env:
        mode = stat.S_IMODE(os.stat(env["PGPASSFILE"]).st_mode)
        directory_mode = stat.S_IMODE(os.stat(os.path.dirname(env["PGPASSFILE"])).st_mode)
        assert "PGPASSWORD" not in env
    assert (mode, directory_mode) == (0o600, 0o700)
    assert not os.path.exists(env["PGPASSFILE"])
