"""Keep freed memory inside the process (glibc's malloc), called once by each entry point.

A training step allocates and frees dozens of (users + items) × d tensors. glibc returns such blocks
to the kernel (big blocks are mmapped, the heap top is trimmed), so the next step faults every page
in again: on Beibei an HPMR step with 2 threads took 129–197 ms (median; min 107, max 607) against
106–112 ms (max 142) with freed memory kept, with about 2.3× fewer page faults and the same peak RSS
(`python bench/train.py`, docs/results.md). The three settings belong together: setting only the
trim threshold or the top pad freezes glibc's adaptive mmap threshold at 128 KiB and makes every
tensor an mmap (about 2× slower than the default).

Peak memory is unchanged; memory freed after the peak is not given back until the process exits.
``GRAPHREC_KEEP_FREED_MEMORY=0`` turns this off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_TOP_PAD = 256 << 20  # grow the heap in steps of this much: fewer brk calls and fresh pages

_done: bool | None = None


def keep_freed_memory() -> bool:
    """Tell glibc never to mmap, never to trim and to grow the heap in 256 MiB steps; True when it
    took effect (glibc on Linux, not turned off by the environment). Idempotent."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if not sys.platform.startswith("linux") or os.environ.get("GRAPHREC_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt  # musl and other C libraries have none
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = all(mallopt(param, value) == 1 for param, value in
                ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_TOP_PAD, _TOP_PAD)))
    return _done
