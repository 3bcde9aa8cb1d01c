"""Keep freed memory inside the process (glibc's malloc), called once by each entry point.

A training step allocates and frees dozens of (users + items) × d tensors. glibc returns such blocks
to the kernel (big blocks are mmapped, the heap top is trimmed), so later steps fault pages in
again. Kept, the median epoch (3 epochs, 2 threads, quiet, alternating with the default) went
LightGCN_M 11.97 → 9.09 s, NMTR 19.78 → 13.14 s, GHCF 17.49 → 15.61 s on taobao_mbcgcn and GHCF
18.26 → 16.84 s on Beibei; HPMR moved by 1–3% (docs/results.md, issue 16's third round). The three
settings belong together: setting only the trim threshold or the top pad freezes glibc's adaptive
mmap threshold at 128 KiB and makes every tensor an mmap (an HPMR step about 2× slower).

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
