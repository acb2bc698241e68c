"""Running the PostgreSQL client programs (pg_dump, pg_restore, pg_dumpall, psql).

Connection parameters travel in a minimal environment and the password in a temporary password file
(`ConnectionInfo.tool_environment`); the command line holds only options, which is what ends up in a
process listing or an error message.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from .connection import ConnectionInfo, one_line, pg_tool
from .errors import ToolFailed


def conninfo_dbname(dbname: str) -> str:
    """A `-d` value that libpq reads as a database name whatever characters it holds."""
    return "dbname='" + dbname.replace("\\", "\\\\").replace("'", "\\'") + "'"


def run_tool(name: str, args: list[str], info: ConnectionInfo, *, dbname: str | None = None,
             stdin: Iterable[bytes] | None = None, stdout=subprocess.DEVNULL,
             settings: dict[str, str] | None = None,
             application_name: str | None = None, started=None, ended=None) -> str:
    """Run a client program to completion; returns its stderr. Raises `ToolFailed` (one line, the
    program's first error) if it exits non-zero. `started(process)` and `ended(process)` are called
    when the child has started and when it has ended (a caller that may have to kill it)."""
    returncode, stderr = run_tool_unchecked(name, args, info, dbname=dbname, stdin=stdin, stdout=stdout,
                                            settings=settings, application_name=application_name,
                                            started=started, ended=ended)
    if returncode != 0:
        raise ToolFailed(f"{name} failed (exit {returncode}): {first_error(stderr) or 'no message'}")
    return stderr


def run_tool_unchecked(name: str, args: list[str], info: ConnectionInfo, *, dbname: str | None = None,
                       stdin: Iterable[bytes] | None = None, stdout=subprocess.DEVNULL,
                       settings: dict[str, str] | None = None,
                       application_name: str | None = None, started=None, ended=None) -> tuple[int, str]:
    """Run a client program to completion; returns its exit code and stderr. `settings` are server
    settings for the program's sessions (PGOPTIONS); `application_name` names its sessions."""
    with info.tool_environment(dbname) as env:
        if application_name:
            env["PGAPPNAME"] = application_name
        if settings:
            env["PGOPTIONS"] = " ".join(f"-c {setting}={value}" for setting, value in settings.items())
        return _run(name, args, env, stdin=stdin, stdout=stdout, started=started, ended=ended)


def _run(name: str, args: list[str], env: dict[str, str], *, stdin: Iterable[bytes] | None,
         stdout, started=None, ended=None) -> tuple[int, str]:
    proc = subprocess.Popen(
        [pg_tool(name), *args], env=env,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=stdout, stderr=subprocess.PIPE,
    )
    try:
        if started:
            started(proc)
        return _finish(proc, stdin)
    finally:
        if ended:
            ended(proc)


def _finish(proc: subprocess.Popen, stdin: Iterable[bytes] | None) -> tuple[int, str]:
    err_chunks: list[bytes] = []
    drain = threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()), daemon=True)
    drain.start()
    try:
        if stdin is not None:
            try:
                for block in stdin:
                    proc.stdin.write(block)
            except BrokenPipeError:
                pass  # the program stopped reading (it failed, or needed only part): its exit code says
            finally:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.close()
        proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        drain.join()
    return proc.returncode, b"".join(err_chunks).decode(errors="replace")


def first_error(stderr: str) -> str:
    """The most telling line of a client program's stderr, as one line."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:
        if "error:" in ln or "ERROR:" in ln or "FATAL:" in ln:
            return one_line(ln)
    return one_line(lines[-1]) if lines else ""


@dataclass
class RestoreErrors:
    """Errors pg_restore reported but went past: those about missing roles are warnings (grants to
    roles the target server does not have, default privileges of roles the restoring role cannot act
    for), anything else fails the restore."""

    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


# Roles the target lacks, or the restoring role cannot act for (default privileges of a role it is
# not a member of, as for objects whose owner it cannot become: `--no-owner`).
_ROLE_MISSING = re.compile(r'role "[^"]*" does not exist|must be member of role "[^"]*"'
                           r'|must be able to SET ROLE "[^"]*"')


def classify_pg_restore_errors(stderr: str) -> RestoreErrors:
    result = RestoreErrors()
    lines = stderr.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("pg_restore: error:"):
            continue
        message = one_line(line.removeprefix("pg_restore: error:"))
        if i + 1 < len(lines) and lines[i + 1].startswith("Command was:"):
            message += " (" + one_line(lines[i + 1])[:200] + ")"
        (result.warnings if _ROLE_MISSING.search(message) else result.errors).append(message)
    return result
