"""A throwaway PostgreSQL server for tests: Debian's server binaries, run as the unprivileged
`postgres` user in a temp dir, listening on a free loopback port (and a unix socket in the temp dir).

Reusable: test modules use the session-scoped `postgres_server` fixture
(`pytest_plugins = ["tests.support.postgres_server"]`) or `PostgresServer` directly.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

SUPERUSER = "postgres"
SUPERUSER_PASSWORD = "postgres-test-password"


def find_server_bin() -> str | None:
    """The bin directory of the newest installed Debian PostgreSQL server, or None."""
    override = os.environ.get("RDSBACKUP_TEST_PG_BIN")
    if override:
        return override
    candidates = [d for d in glob.glob("/usr/lib/postgresql/*/bin") if os.path.exists(f"{d}/initdb")]
    if not candidates:
        return None
    return max(candidates, key=lambda d: int(d.split("/")[-2]))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_unprivileged(cmd: list[str], os_user: str) -> list[str]:
    # The server refuses to run as root; tests usually do.
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", os_user, "--", *cmd]
    return ["su", os_user, "-s", "/bin/sh", "-c", " ".join(subprocess.list2cmdline([c]) for c in cmd)]


@dataclass
class PostgresServer:
    """One running server. `host`/`port` for TCP; the superuser authenticates with a password."""

    bin_dir: str
    base_dir: str
    port: int
    host: str = "127.0.0.1"
    superuser: str = SUPERUSER
    password: str = SUPERUSER_PASSWORD
    os_user: str = "postgres"
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def data_dir(self) -> str:
        return os.path.join(self.base_dir, "data")

    @property
    def socket_dir(self) -> str:
        return os.path.join(self.base_dir, "socket")

    @classmethod
    def start(cls, bin_dir: str | None = None) -> PostgresServer:
        bin_dir = bin_dir or find_server_bin()
        if not bin_dir:
            raise RuntimeError("no PostgreSQL server binaries found under /usr/lib/postgresql/*/bin")
        os_user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        base_dir = tempfile.mkdtemp(prefix="rdsbackup-pg-")
        server = cls(bin_dir=bin_dir, base_dir=base_dir, port=_free_port(), os_user=os_user)
        try:
            server._init_and_run()
        except BaseException:
            server.stop()
            raise
        return server

    def _init_and_run(self) -> None:
        os.makedirs(self.socket_dir)
        pwfile = os.path.join(self.base_dir, "pwfile")
        with open(pwfile, "w") as f:
            f.write(self.password + "\n")
        if os.geteuid() == 0:
            pw = pwd.getpwnam(self.os_user)
            for path in (self.base_dir, self.socket_dir, pwfile):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        subprocess.run(
            _as_unprivileged(
                [f"{self.bin_dir}/initdb", "-D", self.data_dir, "-U", self.superuser, "--pwfile", pwfile,
                 "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
                 "--no-sync"],
                self.os_user,
            ),
            check=True, capture_output=True, cwd=self.base_dir,
        )
        log = open(os.path.join(self.base_dir, "server.log"), "wb")  # noqa: SIM115 - lives with the server
        self._proc = subprocess.Popen(
            _as_unprivileged(
                [f"{self.bin_dir}/postgres", "-D", self.data_dir, "-p", str(self.port),
                 "-c", f"listen_addresses={self.host}", "-c", f"unix_socket_directories={self.socket_dir}",
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                 "-c", "max_connections=100", "-c", "shared_buffers=64MB"],
                self.os_user,
            ),
            stdout=log, stderr=subprocess.STDOUT, cwd=self.base_dir,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"PostgreSQL exited at start: {self.log_tail()}")
            ready = subprocess.run(
                [f"{self.bin_dir}/pg_isready", "-h", self.host, "-p", str(self.port)], capture_output=True
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"PostgreSQL did not start in 30 s: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        path = os.path.join(self.base_dir, "server.log")
        with contextlib.suppress(OSError), open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
        return ""

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()  # SIGTERM: smart shutdown; escalate if a client lingers
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def conninfo(self, dbname: str = "postgres", user: str | None = None, password: str | None = None) -> str:
        user = user or self.superuser
        password = self.password if password is None else password
        return f"host={self.host} port={self.port} dbname={dbname} user={user} password={password}"

    def connect(self, dbname: str = "postgres", user: str | None = None, password: str | None = None,
                autocommit: bool = True):
        """A psycopg connection (superuser unless told otherwise)."""
        import psycopg

        return psycopg.connect(self.conninfo(dbname, user, password), autocommit=autocommit)

    def execute(self, sql: str, dbname: str = "postgres", user: str | None = None,
                password: str | None = None) -> list[tuple]:
        """Run one statement (or several, without parameters); the last result's rows if any."""
        with self.connect(dbname, user, password) as conn, conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall() if cur.description else []

    def psql(self, sql: str, dbname: str = "postgres", user: str | None = None,
             password: str | None = None) -> str:
        """Run a script through psql (stops at the first error); returns stdout."""
        env = dict(os.environ, PGPASSWORD=self.password if password is None else password)
        out = subprocess.run(
            [f"{self.bin_dir}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.host,
             "-p", str(self.port), "-U", user or self.superuser, "-d", dbname],
            input=sql, text=True, capture_output=True, env=env,
        )
        if out.returncode != 0:
            raise RuntimeError(f"psql failed: {out.stderr.strip()}")
        return out.stdout

    def create_database(self, name: str, owner: str | None = None) -> None:
        from psycopg import sql as q

        stmt = q.SQL("CREATE DATABASE {}").format(q.Identifier(name))
        if owner:
            stmt = q.SQL("{} OWNER {}").format(stmt, q.Identifier(owner))
        with self.connect() as conn:
            conn.execute(stmt)

    def drop_database(self, name: str) -> None:
        from psycopg import sql as q

        with self.connect() as conn:
            conn.execute(q.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(q.Identifier(name)))


@contextlib.contextmanager
def running_server(bin_dir: str | None = None) -> Iterator[PostgresServer]:
    server = PostgresServer.start(bin_dir)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole test session (skips when no server is installed)."""
    if not find_server_bin():
        pytest.skip("PostgreSQL server binaries are not installed")
    with running_server() as server:
        yield server
