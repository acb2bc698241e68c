"""A security label provider for test servers: `label_provider_settings()` compiles
tests/support/label_provider.c (the provider `rdsbackup_test`) once per process and returns the server
settings that load it (`shared_preload_libraries`, `dynamic_library_path`).

PostgreSQL stores and dumps security labels only for a loaded provider, and Debian packages none
that runs here (`dummy_seclabel` stays in PostgreSQL's source tree, `sepgsql` needs SELinux). The
server headers come from the `postgresql-server-dev-<major>` package, unpacked without installing it
by scripts/bootstrap.sh (installing it would pull in clang and LLVM); see `server_headers()`.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile

import pytest

PROVIDER = "rdsbackup_test"
LABELS = ("public", "internal", "secret")  # what the provider accepts (label_provider.c)
_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "label_provider.c")
_LIBRARY = "rdsbackup_test_seclabel"
_built: str | None = None


def headers_cache(major: str) -> str:
    """Where scripts/bootstrap.sh unpacks `postgresql-server-dev-<major>` (the same rule as there)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "rdsbackup", f"postgresql-server-dev-{major}")


def server_headers(bin_dir: str) -> str | None:
    """The include directory of the server headers matching the server in `bin_dir`, or None."""
    major = os.path.basename(os.path.dirname(bin_dir.rstrip("/")))
    for root in (os.environ.get("RDSBACKUP_TEST_PG_SERVER_HEADERS"), "/", headers_cache(major)):
        if root:
            path = os.path.join(root, "usr", "include", "postgresql", major, "server")
            if os.path.exists(os.path.join(path, "commands", "seclabel.h")):
                return path
    return None


def label_provider_settings(bin_dir: str) -> dict[str, str]:
    """Server settings that load the test provider; fails the test, naming what is missing, when it
    cannot be built (run `make bootstrap`)."""
    global _built
    if _built is None:
        include = server_headers(bin_dir)
        compiler = shutil.which("cc") or shutil.which("gcc")
        if include is None or compiler is None:
            pytest.fail(f"cannot build the test's security label provider: "
                        f"{'no PostgreSQL server headers' if include is None else 'no C compiler'} "
                        f"(scripts/bootstrap.sh installs them)")
        out_dir = tempfile.mkdtemp(prefix="rdsbackup-seclabel-")
        os.chmod(out_dir, 0o755)  # the server runs as another user
        built = subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-I", include, "-o",
                                os.path.join(out_dir, f"{_LIBRARY}.so"), _SOURCE], capture_output=True, text=True)
        if built.returncode != 0:
            pytest.fail(f"cannot build the test's security label provider: {built.stderr.strip()}")
        atexit.register(shutil.rmtree, out_dir, True)
        _built = out_dir
    return {"dynamic_library_path": f"{_built}:$libdir", "shared_preload_libraries": _LIBRARY}
