"""glibc malloc's settings for a process that decodes file after file (the data preparation's workers).

By default glibc hands freed memory above 128 KiB back to the kernel and serves the next large request with fresh
pages, which the kernel zeroes on first touch: a worker decoding one song after another then pays ~1,600 minor page
faults a 12-s song for buffers it had a moment ago (measured by ``make bench``, part 3). :func:`reuse_freed_memory`
fixes the two thresholds (as the ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` environment variables would):
arrays under 64 MiB come from the heap, and up to 256 MiB of freed heap is kept for the next file. The workers are
short-lived processes, so what they keep ends with them. Elsewhere (another C library) it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util

MMAP_THRESHOLD = 64 << 20   # bytes: a request at least this large is mmapped (and unmapped when freed)
TRIM_THRESHOLD = 256 << 20  # bytes of free heap top kept before any is handed back to the kernel
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (glibc's malloc.h)


def reuse_freed_memory() -> bool:
    """Fix glibc malloc's mmap and trim thresholds for this process; False where there is no glibc ``mallopt``."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
