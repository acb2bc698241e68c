"""The test harness's PostgreSQL server never outlives the process that started it."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

from tests.support.postgres_server import find_server_bin

pytestmark = pytest.mark.skipif(not find_server_bin(), reason="PostgreSQL server binaries are not installed")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose (its parent, init, reaps it).
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def _wait_gone(pid: int, seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def _server_pid(base_dir: str) -> int:
    with open(os.path.join(base_dir, "data", "postmaster.pid")) as f:
        return int(f.readline())


def test_a_killed_test_process_takes_its_server_with_it():
    # A process that starts the shared server, holds a session open, and dies without any cleanup
    # (as an xdist worker killed at teardown or a test run killed by a timeout).
    script = textwrap.dedent("""
        import os, sys
        from tests.support.postgres_server import shared_server
        server = shared_server()
        conn = server.connect()
        print(server.base_dir, flush=True)
        os._exit(0)
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    base_dir = out.stdout.strip()
    pid = _server_pid(base_dir)
    try:
        assert _wait_gone(pid), f"PostgreSQL {pid} outlived the process that started it"
    finally:
        if _alive(pid):
            os.kill(pid, 9)
        subprocess.run(["rm", "-rf", base_dir], check=False)


def test_stop_ends_the_server_even_with_a_session_open():
    script = textwrap.dedent("""
        from tests.support.postgres_server import shared_server, stop_shared_servers
        server = shared_server()
        conn = server.connect()
        with open(server.base_dir + "/data/postmaster.pid") as f:
            print(f.readline().strip(), server.base_dir, flush=True)
        stop_shared_servers()
        print("stopped", flush=True)
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    first, last = out.stdout.split("\n")[:2]
    pid, base_dir = first.split()
    assert last == "stopped"
    assert not _alive(int(pid))
    assert not os.path.exists(base_dir)
