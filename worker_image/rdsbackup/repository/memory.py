"""Keep the process's heap from holding on to freed pack buffers.

glibc raises its mmap threshold each time a large mmapped block is freed, so after the first few
8 MiB packs, later ones come from the heap (and from per-thread arenas), where freed space is kept
rather than returned: a backup's RSS then grows to several times its live data. Pinning the threshold
at 128 KiB makes every large buffer an mmap that goes back to the system when freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_MMAP_THRESHOLD = -3
_done = False


def return_large_buffers_to_the_system() -> None:
    """Idempotent; does nothing where libc is not glibc."""
    global _done
    if _done or not sys.platform.startswith("linux"):
        return
    _done = True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
    except (OSError, AttributeError):
        pass
