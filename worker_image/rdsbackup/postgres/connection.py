"""Connections to the server (psycopg 3) and the environment for its client tools.

The password never goes on a command line or into a log: psycopg receives it as a keyword, child
processes (pg_dump, pg_restore, pg_dumpall, psql) through a temporary password file (`PGPASSFILE`,
mode 0600), and they get a minimal environment (`ConnectionInfo.tool_env`).

TLS: when `$RDSBACKUP_CA_BUNDLE` names a CA bundle (the worker image ships the RDS global bundle
there), every connection, psycopg's and the client programs', uses `sslmode=verify-full` with that
bundle as `sslrootcert`, so the server's certificate and host name are verified. `ssl_mode` and
`ca_bundle` (the CLI's `--ssl-mode`/`--ca-bundle`) override it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field

import psycopg

from .errors import AuthenticationFailed, DatabaseNotFound, PostgresError, ServerUnreachable, TlsFailed
from .settings import options_string

APPLICATION_NAME = "rdsbackup"
CA_BUNDLE_ENV = "RDSBACKUP_CA_BUNDLE"
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


@dataclass(frozen=True)
class ConnectionInfo:
    """Where the server is and who we are. `repr` hides the password."""

    host: str
    port: int
    user: str
    password: str | None = field(default=None, repr=False)
    connect_timeout: int = 15
    # None: from the environment ($RDSBACKUP_CA_BUNDLE -> verify-full), else libpq's default.
    ssl_mode: str | None = None
    ca_bundle: str | None = None

    def __post_init__(self) -> None:
        ssl_mode, ca_bundle = resolve_tls(self.ssl_mode, self.ca_bundle)
        object.__setattr__(self, "ssl_mode", ssl_mode)
        object.__setattr__(self, "ca_bundle", ca_bundle)

    def tls_params(self) -> dict[str, str]:
        """libpq keywords for TLS (empty: libpq's defaults)."""
        params = {}
        if self.ssl_mode:
            params["sslmode"] = self.ssl_mode
        if self.ca_bundle:
            params["sslrootcert"] = self.ca_bundle
        return params

    def check_tls(self) -> None:
        """Fail early and clearly when the CA bundle that verification needs is not there."""
        if self.ssl_mode in ("verify-ca", "verify-full") and self.ca_bundle and not os.path.isfile(self.ca_bundle):
            raise TlsFailed(f"CA bundle {self.ca_bundle} (for sslmode={self.ssl_mode}) does not exist")

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def connect(self, dbname: str, *, autocommit: bool = True,
                settings: dict[str, str] | None = None) -> psycopg.Connection:
        """Open a connection to `dbname`; connection failures become one-line `PostgresError`s.
        `settings` are set at connection start (they override database and role defaults)."""
        self.check_tls()
        extra = {"options": options_string(settings)} if settings else {}
        try:
            return psycopg.connect(
                host=self.host, port=self.port, user=self.user, password=self.password, dbname=dbname,
                connect_timeout=self.connect_timeout, application_name=APPLICATION_NAME,
                autocommit=autocommit, **self.tls_params(), **extra,
            )
        except psycopg.OperationalError as exc:
            raise self.explain(exc, dbname) from None

    def explain(self, exc: Exception, dbname: str) -> PostgresError:
        """Map a libpq connection failure to the error class that says what is wrong."""
        text = one_line(str(exc))
        tls = _tls_reason(text)
        if tls:
            where = f" against CA bundle {self.ca_bundle}" if self.ca_bundle else ""
            return TlsFailed(f"TLS to PostgreSQL at {self.endpoint} failed (sslmode={self.ssl_mode}{where}): {tls}")
        if "password authentication failed" in text or "no password supplied" in text \
                or "authentication failed" in text or "no pg_hba.conf entry" in text:
            return AuthenticationFailed(
                f"authentication failed for user {self.user!r} at {self.endpoint} (check the password)")
        if re.search(r'database ".*" does not exist', text):
            return DatabaseNotFound(f"database {dbname!r} does not exist on {self.endpoint}")
        if any(s in text for s in ("Connection refused", "could not translate host name", "timeout expired",
                                   "No route to host", "Network is unreachable", "could not connect")):
            return ServerUnreachable(f"cannot reach PostgreSQL at {self.endpoint}: {_libpq_reason(text)}")
        return PostgresError(f"cannot connect to {self.endpoint} as {self.user!r}: {_libpq_reason(text)}")

    def tool_env(self, dbname: str | None = None) -> dict[str, str]:
        """Environment for a client tool, without the password (see `tool_environment`): connection
        parameters and the operator's libpq TLS settings, the locale and PATH, nothing else. The
        worker's own environment holds the repository passphrase, the `--password-env` variable and
        AWS credentials, which the client programs have no use for."""
        env = {k: os.environ[k] for k in _PASSED_TO_TOOLS if k in os.environ}
        env.update(PGHOST=self.host, PGPORT=str(self.port), PGUSER=self.user,
                   PGAPPNAME=APPLICATION_NAME, PGCONNECT_TIMEOUT=str(self.connect_timeout),
                   # Messages in English: errors are classified by their text (tools.py, backup.py).
                   LC_MESSAGES="C")
        if self.ssl_mode:
            env["PGSSLMODE"] = self.ssl_mode
        if self.ca_bundle:
            env["PGSSLROOTCERT"] = self.ca_bundle
        if dbname is not None:
            env["PGDATABASE"] = dbname
        return env

    @contextlib.contextmanager
    def tool_environment(self, dbname: str | None = None) -> Iterator[dict[str, str]]:
        """`tool_env` plus the password, in a password file (`PGPASSFILE`, mode 0600, in a private
        temporary directory removed when the block ends), never in `PGPASSWORD`: a variable is
        visible to every process that can read the child's environment and is inherited by anything
        the child starts."""
        env = self.tool_env(dbname)
        if self.password is None:
            env["PGPASSFILE"] = os.devnull  # not the worker's ~/.pgpass either
            yield env
            return
        if "\n" in self.password or "\r" in self.password:
            raise PostgresError("the database password holds a line break, which a password file cannot hold")
        with tempfile.TemporaryDirectory(prefix="rdsbackup-pgpass-") as directory:
            path = os.path.join(directory, "pgpass")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(f"*:*:*:*:{_pgpass_escape(self.password)}\n")
            env["PGPASSFILE"] = path
            yield env


# Variables a client program may inherit from the worker: where programs are, the locale, time zone
# and temporary directory, and libpq TLS settings the operator chose (RDS may force SSL).
_PASSED_TO_TOOLS = ("PATH", "LANG", "TZ", "TMPDIR", "PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY",
                    "PGSSLCRL")


def _pgpass_escape(value: str) -> str:
    # A password file field escapes backslash and colon with a backslash.
    return value.replace("\\", "\\\\").replace(":", "\\:")


def resolve_tls(ssl_mode: str | None, ca_bundle: str | None) -> tuple[str | None, str | None]:
    """(sslmode, sslrootcert) from explicit values, else from `$RDSBACKUP_CA_BUNDLE`: a bundle means
    `verify-full`; nothing means libpq's defaults (and the operator's own PGSSLMODE, if any)."""
    if ssl_mode is not None and ssl_mode not in SSL_MODES:
        raise PostgresError(f"unknown sslmode {ssl_mode!r}: use one of {', '.join(SSL_MODES)}")
    if ca_bundle is None and ssl_mode not in ("disable", "allow", "prefer"):
        ca_bundle = os.environ.get(CA_BUNDLE_ENV) or None
    if ssl_mode is None and ca_bundle:
        ssl_mode = "verify-full"
    return ssl_mode, ca_bundle


_TLS_PATTERNS = (
    "certificate verify failed", "SSL error", "SSL SYSCALL", "server does not support SSL",
    "root certificate file", "does not match host name", "no encryption", "sslmode value",
    "could not read certificate", "server certificate for",
)


def _tls_reason(text: str) -> str | None:
    if "no pg_hba.conf entry" in text and "no encryption" in text:
        return "the server requires TLS (pg_hba.conf has no entry for an unencrypted connection)"
    if not any(p in text for p in _TLS_PATTERNS):
        return None
    return _libpq_reason(text)


def one_line(text: str) -> str:
    """Collapse a (multi-line) message into one line."""
    return " ".join(text.split())


def _libpq_reason(text: str) -> str:
    # libpq says 'connection failed: connection to server at "h" (1.2.3.4), port 5 failed: <reason>'
    reason = text.rsplit("failed:", 1)[-1].strip()
    return reason or text


def connect_maintenance(info: ConnectionInfo) -> psycopg.Connection:
    """A connection to a database that always exists (`postgres`, else `template1`)."""
    try:
        return info.connect("postgres")
    except DatabaseNotFound:
        return info.connect("template1")


def pg_tool(name: str) -> str:
    """Path of a PostgreSQL client program: `$RDSBACKUP_PG_BIN`, else the newest Debian/PGDG install,
    else PATH. The newest matters: pg_dump must be at least as new as the server it dumps."""
    override = os.environ.get("RDSBACKUP_PG_BIN")
    if override:
        return os.path.join(override, name)
    found = [p for p in glob.glob(f"/usr/lib/postgresql/*/bin/{name}") if os.access(p, os.X_OK)]
    if found:
        return max(found, key=lambda p: _version_key(p.split("/")[-3]))
    path = shutil.which(name)
    if not path:
        raise PostgresError(f"PostgreSQL client program {name!r} not found (install postgresql-client)")
    return path


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)) or (0,)


def tool_major_version(path: str) -> int:
    """Major version of a client program, from the directory layout or `--version`."""
    import subprocess

    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    return int(match.group(1)) if match else 0
