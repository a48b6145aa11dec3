"""The preparation's workers reuse freed memory (``audiotrain.data.allocator``): a second 40-MB array after the first
is freed costs next to no page faults there, where glibc's defaults hand it fresh zeroed pages (~10,000 faults)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from audiotrain.data.prepare_pool import ordered_map

ROOT = Path(__file__).resolve().parents[2]
SIZE = 40 << 20  # above glibc's largest dynamic mmap threshold (32 MiB): by default always mmapped anew
PAGES = SIZE // 4096


def _second_array_faults(_: int = 0) -> int:
    """Minor page faults of writing a 40-MB malloc'd buffer after an equal one was written and freed."""
    import ctypes
    import ctypes.util
    import resource

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)

    def touch() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        p = libc.malloc(SIZE)
        ctypes.memset(p, 1, SIZE)
        libc.free(p)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    touch()
    return touch()


def _in_fresh_process(setup: str) -> int:
    code = (f"{setup}\nfrom tests.core.test_allocator import _second_array_faults\n"
            "print(_second_array_faults())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return int(out.stdout.strip().splitlines()[-1])


def test_fixed_thresholds_reuse_a_freed_array_where_the_default_faults_every_page():
    default = _in_fresh_process("")
    fixed = _in_fresh_process("from audiotrain.data.allocator import reuse_freed_memory\n"
                              "assert reuse_freed_memory()")
    assert default > PAGES * 0.9  # glibc's default: the 40-MB array is mmapped anew, every page faults
    assert fixed < PAGES * 0.05, (default, fixed)


def test_a_preparation_worker_runs_with_the_thresholds_fixed():
    (faults,) = list(ordered_map(_second_array_faults, 1, workers=1, what=str))
    assert faults < PAGES * 0.05, faults
