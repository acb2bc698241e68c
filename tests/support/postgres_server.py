"""A throwaway PostgreSQL server for tests: Debian's server binaries, run as the unprivileged
`postgres` user in a temp dir, listening on a free loopback port (and a unix socket in the temp dir).

Reusable: `shared_server()` starts one server per test process (stopped at exit) for modules that
import this one; the session-scoped `postgres_server` fixture (`pytest_plugins =
["tests.support.postgres_server"]`) hands out the same server; `running_server()` gives a private one.

TLS (opt-in): `PostgresServer.start(ssl=True)` / `running_server(ssl=True)` / `shared_tls_server()` make
a test CA and a server certificate for `localhost` and `127.0.0.1`, turn `ssl` on and let TCP clients in
only over TLS (`hostssl` lines in pg_hba.conf). `server.ca_file` is the CA to verify against (what
`RDSBACKUP_CA_BUNDLE` points at in the worker's tests). The helpers here connect with libpq's default
`sslmode=prefer`, so they work with either kind of server.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
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


def _as_unprivileged(os_user: str) -> dict:
    """Popen arguments that run a command as `os_user` (the server refuses to run as root; tests
    usually do). The process is the command itself, not a runuser/su wrapper, so signals reach it."""
    if os.geteuid() != 0:
        return {}
    pw = pwd.getpwnam(os_user)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the server's child process: SIGINT (fast shutdown) when the test process that started it
    dies, however it dies (an xdist worker killed at teardown, a timeout, kill -9), so no server
    outlives its tests. Runs after the switch to the unprivileged user, which would clear it."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGINT)


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
    ssl: bool = False
    # Extra server settings (name -> value), e.g. a larger max_locks_per_transaction for many tables.
    settings: dict[str, str] = field(default_factory=dict)
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def ca_file(self) -> str:
        """The test CA's certificate (PEM) that signed the server's certificate (ssl=True only)."""
        return os.path.join(self.base_dir, "tls", "ca.pem")

    @property
    def data_dir(self) -> str:
        return os.path.join(self.base_dir, "data")

    @property
    def socket_dir(self) -> str:
        return os.path.join(self.base_dir, "socket")

    @classmethod
    def start(cls, bin_dir: str | None = None, *, ssl: bool = False,
              settings: dict[str, str] | None = None) -> PostgresServer:
        bin_dir = bin_dir or find_server_bin()
        if not bin_dir:
            raise RuntimeError("no PostgreSQL server binaries found under /usr/lib/postgresql/*/bin")
        os_user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        base_dir = tempfile.mkdtemp(prefix="rdsbackup-pg-")
        server = cls(bin_dir=bin_dir, base_dir=base_dir, port=_free_port(), os_user=os_user, ssl=ssl,
                     settings=dict(settings or {}))
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
            [f"{self.bin_dir}/initdb", "-D", self.data_dir, "-U", self.superuser, "--pwfile", pwfile,
             "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
            check=True, capture_output=True, cwd=self.base_dir, **_as_unprivileged(self.os_user),
        )
        tls_options: list[str] = []
        if self.ssl:
            tls_options = self._setup_tls()
        log = open(os.path.join(self.base_dir, "server.log"), "wb")  # noqa: SIM115 - lives with the server
        # The parent-death signal follows the thread that started the server: only the main thread
        # lives as long as the process.
        on_parent_death = _die_with_parent if threading.current_thread() is threading.main_thread() else None
        self._proc = subprocess.Popen(
            [f"{self.bin_dir}/postgres", "-D", self.data_dir, "-p", str(self.port),
             "-c", f"listen_addresses={self.host}", "-c", f"unix_socket_directories={self.socket_dir}",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=100", "-c", "shared_buffers=64MB", *tls_options,
             *(arg for name, value in self.settings.items() for arg in ("-c", f"{name}={value}"))],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.base_dir, preexec_fn=on_parent_death,
            **_as_unprivileged(self.os_user),
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

    def _setup_tls(self) -> list[str]:
        """A test CA, a server certificate for localhost/127.0.0.1, TLS-only pg_hba.conf; returns the
        server options that turn TLS on."""
        tls_dir = os.path.join(self.base_dir, "tls")
        os.makedirs(tls_dir)
        ca_pem, cert_pem, key_pem = make_test_certificates()
        with open(self.ca_file, "wb") as f:
            f.write(ca_pem)
        cert_file, key_file = os.path.join(tls_dir, "server.crt"), os.path.join(tls_dir, "server.key")
        with open(cert_file, "wb") as f:
            f.write(cert_pem)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem)
        if os.geteuid() == 0:  # the server refuses a key that its user does not own or others can read
            pw = pwd.getpwnam(self.os_user)
            for path in (tls_dir, cert_file, key_file):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        os.chmod(tls_dir, 0o755)
        hba = os.path.join(self.data_dir, "pg_hba.conf")
        with open(hba, "w") as f:
            f.write("# rdsbackup tests: TCP only over TLS\n"
                    "local all all trust\n"
                    "hostssl all all 127.0.0.1/32 scram-sha-256\n"
                    "hostssl all all ::1/128 scram-sha-256\n")
        return ["-c", "ssl=on", "-c", f"ssl_cert_file={cert_file}", "-c", f"ssl_key_file={key_file}"]

    def log_tail(self, lines: int = 20) -> str:
        path = os.path.join(self.base_dir, "server.log")
        with contextlib.suppress(OSError), open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
        return ""

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)  # fast shutdown: ends lingering sessions, as `pg_ctl stop`
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
            if conn.execute("SELECT datistemplate FROM pg_database WHERE datname = %s", (name,)).fetchone() == (True,):
                conn.execute(q.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(q.Identifier(name)))
            conn.execute(q.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(q.Identifier(name)))


def create_tablespace(server: PostgresServer, name: str) -> str:
    """CREATE TABLESPACE `name` in a new directory owned by the server's OS user (tests may run as
    root, the server never); returns the directory (remove it after `DROP TABLESPACE`)."""
    location = tempfile.mkdtemp(prefix="rdsbackup-ts-", dir="/tmp")
    os.chmod(location, 0o700)
    if os.geteuid() == 0:
        owner = pwd.getpwnam(server.os_user)
        os.chown(location, owner.pw_uid, owner.pw_gid)
    server.execute(f'CREATE TABLESPACE "{name}" LOCATION \'{location}\'')
    return location


def drop_tablespace(server: PostgresServer, name: str, location: str | None) -> None:
    server.execute(f'DROP TABLESPACE IF EXISTS "{name}"')
    if location:
        shutil.rmtree(location, ignore_errors=True)


def make_test_certificates(hosts: tuple[str, ...] = ("localhost",), ips: tuple[str, ...] = ("127.0.0.1",),
                           ca_name: str = "rdsbackup test CA") -> tuple[bytes, bytes, bytes]:
    """(CA certificate, server certificate, server key), PEM: a throwaway CA and a server certificate
    it signed with SAN `DNS:<hosts>, IP:<ips>`."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_subject).issuer_name(ca_subject)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    san = [x509.DNSName(h) for h in hosts] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else ips[0])]))
        .issuer_name(ca_subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return (ca_cert.public_bytes(serialization.Encoding.PEM), cert.public_bytes(serialization.Encoding.PEM),
            key_pem)


@contextlib.contextmanager
def running_server(bin_dir: str | None = None, *, ssl: bool = False,
                   settings: dict[str, str] | None = None) -> Iterator[PostgresServer]:
    server = PostgresServer.start(bin_dir, ssl=ssl, settings=settings)
    try:
        yield server
    finally:
        server.stop()


_shared: PostgresServer | None = None


def shared_server() -> PostgresServer:
    """The server shared by every test of this process, started on first use (skips the test when no
    server is installed)."""
    global _shared
    if _shared is None:
        if not find_server_bin():
            pytest.skip("PostgreSQL server binaries are not installed")
        _shared = PostgresServer.start()
        atexit.register(_shared.stop)
    return _shared


def stop_shared_servers() -> None:
    """Stop this process's shared servers (tests/conftest.py calls it when the session finishes: an
    xdist worker may be killed at teardown before its atexit handlers run)."""
    global _shared, _shared_tls
    for server in (_shared, _shared_tls):
        if server is not None:
            server.stop()
    _shared = _shared_tls = None


_shared_tls: PostgresServer | None = None


def shared_tls_server() -> PostgresServer:
    """A second shared server that accepts TCP clients only over TLS (see the module docstring)."""
    global _shared_tls
    if _shared_tls is None:
        if not find_server_bin():
            pytest.skip("PostgreSQL server binaries are not installed")
        _shared_tls = PostgresServer.start(ssl=True)
        atexit.register(_shared_tls.stop)
    return _shared_tls


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer:
    """A PostgreSQL server for the whole test session."""
    return shared_server()


# --- A rich sample database and the comparisons that prove a restore equal -----------------------------

SAMPLE_ROLE = "app_reader"

SAMPLE_SCHEMA_SQL = r"""
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE EXTENSION IF NOT EXISTS hstore;
CREATE SCHEMA app;
COMMENT ON SCHEMA app IS 'application schema';
CREATE TYPE app.status AS ENUM ('new', 'paid', 'shipped');
CREATE DOMAIN app.positive_int AS integer CHECK (VALUE > 0);

CREATE TABLE app.customers (
    id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE, attrs hstore, secret bytea,
    created timestamptz NOT NULL DEFAULT '2024-01-01 00:00:00+00');
COMMENT ON TABLE app.customers IS 'people who buy';
COMMENT ON COLUMN app.customers.email IS 'contact address';

CREATE TABLE app.orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id int NOT NULL REFERENCES app.customers (id),
    status app.status NOT NULL DEFAULT 'new', qty app.positive_int, total numeric(12, 2),
    total_with_tax numeric GENERATED ALWAYS AS (total * 1.2) STORED, note text);
CREATE INDEX orders_customer_idx ON app.orders (customer_id);

CREATE TABLE app.audit (id bigserial PRIMARY KEY, order_id bigint, action text);
CREATE FUNCTION app.log_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO app.audit (order_id, action) VALUES (NEW.id, TG_OP);
    RETURN NEW;
END $$;
CREATE TRIGGER orders_audit AFTER INSERT OR UPDATE ON app.orders
    FOR EACH ROW EXECUTE FUNCTION app.log_order();
CREATE PROCEDURE app.mark_paid(order_id bigint) LANGUAGE sql AS $$
    UPDATE app.orders SET status = 'paid' WHERE id = order_id $$;
COMMENT ON FUNCTION app.log_order() IS 'audit trail';

CREATE TABLE app.events (payload jsonb, note text);  -- no primary key: physical order
CREATE TABLE app.measurements (id int, city text, logdate date NOT NULL, value float8,
    PRIMARY KEY (id, logdate)) PARTITION BY RANGE (logdate);
CREATE TABLE app.measurements_2024 PARTITION OF app.measurements
    FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE app.measurements_2025 PARTITION OF app.measurements
    FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE app.base (id int PRIMARY KEY, v text);
CREATE TABLE app.child (extra int) INHERITS (app.base);
CREATE UNLOGGED TABLE app.cache (k text PRIMARY KEY, v text);
CREATE TABLE public."Mixed Case" ("Id" int PRIMARY KEY, "va""l" text);
CREATE TABLE app.docs (id int PRIMARY KEY, doc oid);

CREATE VIEW app.order_totals AS SELECT customer_id, sum(total) AS total FROM app.orders GROUP BY customer_id;
CREATE MATERIALIZED VIEW app.order_counts AS SELECT status, count(*) AS n FROM app.orders GROUP BY status;
CREATE UNIQUE INDEX order_counts_status ON app.order_counts (status);
CREATE SEQUENCE app.ticket_seq START 1000 INCREMENT 7;

ALTER TABLE app.customers ENABLE ROW LEVEL SECURITY;
CREATE POLICY customers_by_name ON app.customers USING (name = current_user);
GRANT USAGE ON SCHEMA app TO app_reader;
GRANT SELECT ON app.orders, app.order_totals TO app_reader;
"""

SAMPLE_DATA_SQL = r"""
INSERT INTO app.customers (name, email, attrs, secret)
SELECT 'customer ' || i, 'c' || i || '@example.com', hstore('tier', (i % 3)::text),
       CASE WHEN i % 10 = 0 THEN NULL ELSE digest(i::text, 'sha256') END
FROM generate_series(1, 2000) i;
INSERT INTO app.customers (name, email) VALUES
    (E'tab\there, new\nline, back\\slash, quote '' and "dq"', NULL), ('ünïcødé ✓ 日本', 'u@example.com');
INSERT INTO app.orders (customer_id, status, qty, total, note)
SELECT 1 + (i * 7919) % 2000, (ARRAY['new', 'paid', 'shipped'])[1 + i % 3]::app.status, 1 + i % 5,
       round((i * 1.37)::numeric, 2), CASE WHEN i % 4 = 0 THEN NULL ELSE repeat('n', i % 50) END
FROM generate_series(1, 20000) i;
INSERT INTO app.events SELECT jsonb_build_object('i', i, 'tags', jsonb_build_array('a', i % 7)), 'e' || i
FROM generate_series(1, 5000) i;
INSERT INTO app.measurements SELECT i, 'city ' || (i % 17), DATE '2024-01-01' + (i % 700), i * 0.5
FROM generate_series(1, 3000) i;
INSERT INTO app.base VALUES (1, 'base one'), (2, 'base two');
INSERT INTO app.child VALUES (3, 'child three', 33);
INSERT INTO app.cache SELECT 'k' || i, 'v' || i FROM generate_series(1, 100) i;
INSERT INTO public."Mixed Case" VALUES (1, 'x'), (2, NULL);
SELECT nextval('app.ticket_seq') FROM generate_series(1, 5);
REFRESH MATERIALIZED VIEW app.order_counts;
INSERT INTO app.docs VALUES (1, lo_from_bytea(0, convert_to('hello large object', 'UTF8')));
INSERT INTO app.docs
SELECT 2, lo_from_bytea(0, convert_to(string_agg(md5(i::text), ''), 'UTF8')) FROM generate_series(1, 80000) i;
SELECT lo_from_bytea(0, ''::bytea);
"""


def create_sample_database(server: PostgresServer, dbname: str, *, user: str | None = None,
                           password: str | None = None) -> None:
    """Create `dbname` (owned by `user`) and fill it with every kind of object a restore must bring back.
    The role `app_reader` must exist (see `ensure_role`)."""
    with server.connect(user=user, password=password) as conn:
        from psycopg import sql as q

        conn.execute(q.SQL("CREATE DATABASE {}").format(q.Identifier(dbname)))
    server.psql(SAMPLE_SCHEMA_SQL + SAMPLE_DATA_SQL, dbname=dbname, user=user, password=password)
    docs = server.execute("SELECT doc FROM app.docs ORDER BY id", dbname=dbname, user=user, password=password)
    server.psql(f"COMMENT ON LARGE OBJECT {docs[0][0]} IS 'greeting';"
                f"GRANT SELECT ON LARGE OBJECT {docs[1][0]} TO {SAMPLE_ROLE};"
                f"ALTER DATABASE \"{dbname}\" SET search_path = app, public, \"$user\";"
                f"ALTER DATABASE \"{dbname}\" SET work_mem = '8MB';"
                f"COMMENT ON DATABASE \"{dbname}\" IS 'the shop';"
                f"REVOKE CONNECT, TEMPORARY ON DATABASE \"{dbname}\" FROM PUBLIC;"
                f"GRANT CONNECT ON DATABASE \"{dbname}\" TO {SAMPLE_ROLE};",
                dbname=dbname, user=user, password=password)


def ensure_role(server: PostgresServer, name: str, options: str = "NOLOGIN", *, user: str | None = None,
                password: str | None = None) -> None:
    exists = server.execute(f"SELECT 1 FROM pg_roles WHERE rolname = '{name}'")
    if not exists:
        server.execute(f'CREATE ROLE "{name}" {options}', user=user, password=password)


def schema_dump(server: PostgresServer, dbname: str) -> str:
    """`pg_dump --schema-only`, with the random `\\restrict` lines of pg_dump 15.14+ removed."""
    env = dict(os.environ, PGPASSWORD=server.password)
    out = subprocess.run(
        [f"{server.bin_dir}/pg_dump", "--schema-only", "-h", server.host, "-p", str(server.port),
         "-U", server.superuser, "-d", dbname],
        capture_output=True, text=True, env=env, check=True,
    ).stdout
    return "\n".join(ln for ln in out.splitlines()
                     if not ln.startswith(("\\restrict", "\\unrestrict")))


def table_checksums(server: PostgresServer, dbname: str) -> dict[str, tuple[int, str]]:
    """Row count and an order-independent checksum of every table (leaf partitions, children too)."""
    tables = server.execute(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
        " AND n.nspname !~ '^pg_toast' ORDER BY 1", dbname=dbname)
    result = {}
    with server.connect(dbname) as conn:
        for (name,) in tables:
            count, digest = conn.execute(
                f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))"
                f" FROM ONLY {name} t").fetchone()
            result[name] = (count, digest)
    return result


def sequence_values(server: PostgresServer, dbname: str) -> dict[str, tuple[int, bool]]:
    rows = server.execute(
        "SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_sequences ORDER BY 1",
        dbname=dbname)
    return dict(rows)


def large_objects(server: PostgresServer, dbname: str) -> list[tuple]:
    return server.execute(
        "SELECT l.oid, pg_get_userbyid(l.lomowner), md5(lo_get(l.oid)), obj_description(l.oid, 'pg_largeobject'),"
        " l.lomacl::text FROM pg_largeobject_metadata l ORDER BY l.oid", dbname=dbname)


def database_properties(server: PostgresServer, dbname: str) -> list[tuple]:
    """Settings, comment and grants of the database itself."""
    return server.execute(
        "SELECT (SELECT setconfig FROM pg_db_role_setting s WHERE s.setdatabase = d.oid AND s.setrole = 0),"
        " shobj_description(d.oid, 'pg_database'), d.datacl::text, pg_get_userbyid(d.datdba)"
        " FROM pg_database d WHERE d.datname = %s".replace("%s", "'" + dbname.replace("'", "''") + "'"))
