"""Cluster globals: roles (without passwords), role memberships and settings, tablespaces.

`pg_dumpall --globals-only --no-role-passwords` reads `pg_roles`, not `pg_authid`, so it works as
RDS's master user, which is not a superuser.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable

from .connection import ConnectionInfo, one_line
from .tools import conninfo_dbname, run_tool


def dump_globals(info: ConnectionInfo, maintenance_db: str) -> bytes:
    """The globals script (plain SQL; small, so held in memory)."""
    with tempfile.TemporaryFile() as f:
        run_tool("pg_dumpall", ["--globals-only", "--no-role-passwords", "--no-password",
                                "-l", maintenance_db], info, stdout=f)
        f.seek(0)
        return f.read()


_EXPECTED = re.compile(r"already exists|must be superuser|permission denied to (alter|create|grant)"
                       r"|is a member of role|cannot be granted back")


def restore_globals(info: ConnectionInfo, maintenance_db: str, script: Iterable[bytes]) -> list[str]:
    """Run the globals script, going past errors (roles that exist already; RDS-reserved roles and
    attributes that only a superuser may set). Returns the errors as warnings, expected ones left out.
    """
    stderr = run_tool("psql", ["-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=0", "-f", "-",
                               "-d", conninfo_dbname(maintenance_db)], info, stdin=script)
    warnings = []
    for line in stderr.splitlines():
        if "ERROR:" in line and not _EXPECTED.search(line):
            warnings.append("globals: " + one_line(line.split("ERROR:", 1)[1]))
    return warnings
