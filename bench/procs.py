"""Process plumbing for the benchmark: timed commands that can always be stopped, and a sampler of the
resident memory of a whole process tree.

Every command runs in its own session (process group), so that an interrupted benchmark kills a whole
pipeline (`pg_dump | restic ...`) and not only the shell in front of it.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass

_live: set[subprocess.Popen] = set()
_live_lock = threading.Lock()


class CommandFailed(RuntimeError):
    pass


@dataclass
class Result:
    seconds: float
    stdout: str
    stderr: str
    peak_tree_rss: int = 0  # bytes, sum over the process and its descendants, sampled
    cpu_seconds: float = 0.0  # user + system of the command and every descendant it waited for


def kill_all() -> None:
    """Stop every command still running (their whole process groups)."""
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def stoppable_run(prefix: str):
    """A benchmark's lifetime: yields (a new work directory, a list to put servers into); SIGTERM
    raises KeyboardInterrupt; on leaving, every command still running is killed, every server in the
    list stopped and the work directory removed (also after Ctrl-C)."""

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    work = tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("RDSBACKUP_BENCH_TMPDIR"))
    servers: list = []
    try:
        yield work, servers
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        kill_all()
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


def run(cmd: list[str] | str, *, env: dict | None = None, shell: bool = False, sample_rss: bool = False,
        check: bool = True, stdin_path: str | None = None, stdout_path: str | None = None) -> Result:
    """Run a command to its end; wall time measured around it. `shell=True` runs `cmd` with
    `bash -o pipefail -c`, so a failing stage of a pipeline fails the whole command."""
    argv = ["bash", "-o", "pipefail", "-c", cmd] if shell else cmd
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL  # noqa: SIM115
    stdout = open(stdout_path, "wb") if stdout_path else subprocess.PIPE  # noqa: SIM115
    try:
        usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, env=env, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
                                start_new_session=True)
        with _live_lock:
            _live.add(proc)
        sampler = RssSampler(proc.pid) if sample_rss else None
        if sampler:
            sampler.start()
        try:
            out, err = proc.communicate()
            seconds = time.monotonic() - t0
            usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        finally:
            if sampler:
                sampler.stop()
            with _live_lock:
                _live.discard(proc)
    finally:
        if stdin_path:
            stdin.close()
        if stdout_path:
            stdout.close()
    stdout_text = (out or b"").decode(errors="replace")
    stderr_text = (err or b"").decode(errors="replace")
    if check and proc.returncode != 0:
        shown = cmd if isinstance(cmd, str) else " ".join(cmd)
        raise CommandFailed(f"exit {proc.returncode}: {shown}\n{stderr_text[-3000:]}")
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    return Result(seconds, stdout_text, stderr_text, sampler.peak if sampler else 0, round(cpu, 2))


_PAGE = os.sysconf("SC_PAGE_SIZE")


def _tree_rss(root: int) -> int:
    """Sum of RSS over `root` and every descendant (from /proc)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the command name (which may hold spaces and parentheses).
        fields = stat[stat.rindex(b")") + 2:].split()
        pid = int(name)
        parents[pid] = int(fields[1])
        rss[pid] = int(fields[21]) * _PAGE
    total = 0
    for pid in rss:
        p = pid
        while p and p != root:
            p = parents.get(p, 0)
        if p == root:
            total += rss[pid]
    return total


class RssSampler(threading.Thread):
    """Samples the resident memory of a process tree every `interval` seconds; keeps the peak."""

    def __init__(self, root: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.root = root
        self.interval = interval
        self.peak = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            with contextlib.suppress(Exception):
                self.peak = max(self.peak, _tree_rss(self.root))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()
