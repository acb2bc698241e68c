"""Connections to SQL Server, behind a small interface so tests can answer with a fake.

    conn = connect(info)               # the default factory: python-tds (pure Python TDS, no ODBC)
    rows = conn.query(sql, params)     # list of dicts (column name -> value) of the last result set
    conn.close()

A replacement factory is any callable `(SqlServerInfo) -> connection` whose connection has `query` and
`close`. SQL uses `%s` placeholders (python-tds's `pyformat`); values never go into the SQL text.

TLS: when `$RDSBACKUP_CA_BUNDLE` names a CA bundle (the worker image ships the RDS global bundle), the
connection is encrypted and the server certificate is verified against it, host name included.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import SqlServerAuthenticationFailed, SqlServerError, SqlServerTlsFailed, SqlServerUnreachable

CA_BUNDLE_ENV = "RDSBACKUP_CA_BUNDLE"


@dataclass(frozen=True)
class SqlServerInfo:
    """Where the server is and who we are. `repr` hides the password."""

    host: str
    port: int
    user: str
    password: str | None = field(default=None, repr=False)
    login_timeout: int = 15
    query_timeout: int = 300
    # None: `$RDSBACKUP_CA_BUNDLE` if set; "" turns TLS off (tests, never the worker image).
    ca_bundle: str | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def resolved_ca_bundle(self) -> str | None:
        if self.ca_bundle is not None:
            return self.ca_bundle or None
        return os.environ.get(CA_BUNDLE_ENV) or None


class SqlServerConnection(Protocol):
    def query(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


ConnectionFactory = Callable[[SqlServerInfo], SqlServerConnection]


def one_line(text: str) -> str:
    return " ".join(str(text).split())


class TdsConnection:
    """python-tds behind the `query`/`close` interface (autocommit: the RDS procedures run alone)."""

    def __init__(self, conn):
        self._conn = conn

    def query(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        with self._conn.cursor() as cur:
            cur.execute(sql, params or None)
            rows: list[dict[str, Any]] = []
            while True:
                if cur.description:
                    names = [d[0] for d in cur.description]
                    rows = [dict(zip(names, r, strict=False)) for r in cur.fetchall()]
                if not cur.nextset():
                    break
            return rows

    def close(self) -> None:
        self._conn.close()


def validate_host(cert, name: bytes) -> bool:
    """Host name check for python-tds's TLS (its own reads X.509 extensions through pyOpenSSL APIs that
    newer pyOpenSSL releases removed): the certificate's DNS/IP subject alternative names, else its CN."""
    import ipaddress

    from cryptography import x509
    from cryptography.x509.oid import NameOID

    host = name.decode("ascii", "replace").lower().rstrip(".")
    crt = cert.to_cryptography()
    try:
        san = crt.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if ip is not None:
            return ip in san.get_values_for_type(x509.IPAddress)
        return any(_dns_match(pattern.lower(), host) for pattern in san.get_values_for_type(x509.DNSName))
    cns = crt.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return any(_dns_match(str(cn.value).lower(), host) for cn in cns)


def _dns_match(pattern: str, host: str) -> bool:
    pattern = pattern.rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == host


def connect(info: SqlServerInfo) -> SqlServerConnection:
    """The default factory: a python-tds connection to `master`, TLS-verified when a CA bundle is set."""
    import pytds
    import pytds.tls

    cafile = info.resolved_ca_bundle()
    if cafile and not os.path.isfile(cafile):
        raise SqlServerTlsFailed(f"CA bundle {cafile} does not exist")
    if cafile:
        pytds.tls.validate_host = validate_host
    try:
        conn = pytds.connect(
            server=info.host, port=info.port, user=info.user, password=info.password, database="master",
            login_timeout=info.login_timeout, timeout=info.query_timeout, autocommit=True,
            appname="rdsbackup", cafile=cafile, validate_host=bool(cafile),
        )
    except Exception as exc:
        raise explain(exc, info) from None
    return TdsConnection(conn)


def explain(exc: Exception, info: SqlServerInfo) -> SqlServerError:
    text = one_line(exc)
    lowered = text.lower()
    if "login failed" in lowered:
        return SqlServerAuthenticationFailed(
            f"authentication failed for user {info.user!r} at {info.endpoint} (check the password)")
    if any(s in lowered for s in ("certificate", "ssl", "tls", "host name")):
        return SqlServerTlsFailed(f"TLS to SQL Server at {info.endpoint} failed: {text}")
    if isinstance(exc, OSError) or any(s in lowered for s in ("timed out", "refused", "unreachable",
                                                               "name or service not known", "cannot connect")):
        return SqlServerUnreachable(f"cannot reach SQL Server at {info.endpoint}: {text}")
    return SqlServerError(f"cannot connect to SQL Server at {info.endpoint} as {info.user!r}: {text}")


FACTORY_ENV = "RDSBACKUP_SQLSERVER_CONNECT"


def factory_from_env() -> ConnectionFactory:
    """The connection factory: python-tds, unless `$RDSBACKUP_SQLSERVER_CONNECT` names another one as
    `module:callable` (the tests' fake RDS SQL Server, for a worker run as a subprocess)."""
    name = os.environ.get(FACTORY_ENV)
    if not name:
        return connect
    import importlib

    module, _, attr = name.partition(":")
    try:
        return getattr(importlib.import_module(module), attr or "connect")
    except (ImportError, AttributeError) as exc:
        raise SqlServerError(f"{FACTORY_ENV}={name!r} names no connection factory: {exc}") from None
