"""The processes that work on the files of a data preparation: the cache build (``dataset.prepare_workers``) and
the plugins' dataset converters (their ``--workers`` option, or the same setting where they take audiotrain's).

:func:`ordered_map` runs ``work(i)`` for ``i`` in ``range(n)`` over forked worker processes and yields the
results in order. The work and its inputs are inherited through ``fork`` (nothing is pickled on the way in: the
frozen encoders' weights are shared with the parent page by page, not copied); only the small results come back.
Every worker computes with one torch thread, so the bytes it writes are the same whichever worker — and however
many workers — handled a file — and with glibc malloc's thresholds fixed (``audiotrain.data.allocator``: a file's
buffers reuse the last file's pages). ``workers=0`` runs everything in this process, at its own thread count.

A worker that dies (the kernel's OOM killer, a segfault in a decoder library) ends the build with one sentence
naming the file it was working on and the fix; an exception inside the work is the work's to report (the
preparation and the converters turn it into a bad-input line).
"""
from __future__ import annotations

import multiprocessing

from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterator

from audiotrain.errors import UserError

_WORK: Callable[[int], Any] | None = None  # set in the parent before the fork; the workers call it


def _init_worker() -> None:
    import torch

    from audiotrain.data.allocator import reuse_freed_memory

    torch.set_num_threads(1)
    reuse_freed_memory()  # file after file: reuse the last file's buffers instead of fresh zeroed pages
    # Ctrl-C and a SIGTERM sent to the whole process group (timeout, SLURM) are the parent's to act on; a
    # worker whose parent is gone finds its queue closed and exits
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _call(i: int) -> Any:
    assert _WORK is not None
    return _WORK(i)


def ordered_map(work: Callable[[int], Any], n: int, workers: int, what: Callable[[int], str],
                option: str = "dataset.prepare_workers") -> Iterator[Any]:
    """``work(0) … work(n-1)``, in order, over ``workers`` processes (0: here). ``what(i)`` names the input of
    call ``i`` and ``option`` the setting of the number of processes, for the error a dead worker gives."""
    global _WORK
    if workers <= 0 or n == 0 or "fork" not in multiprocessing.get_all_start_methods():
        for i in range(n):
            yield work(i)
        return
    _WORK = work
    pool = ProcessPoolExecutor(max_workers=min(workers, n), mp_context=multiprocessing.get_context("fork"),
                               initializer=_init_worker)
    futures = []
    try:
        futures = [pool.submit(_call, i) for i in range(n)]
        for i, future in enumerate(futures):
            try:
                yield future.result()
            except BrokenProcessPool:
                raise UserError(f"A data-preparation worker died (out of memory, or a crash in a decoder library) "
                                f"with {what(i)} or a later file in progress: retry with fewer processes "
                                f"({_one(option)}), or find the file and leave it out.") from None
    finally:
        for f in futures:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        _WORK = None


def _one(option: str) -> str:
    """The setting that asks for one process: ``dataset.prepare_workers=1`` or ``--workers 1``."""
    return f"{option} 1" if option.startswith("--") else f"{option}=1"


def resolve_workers(value: Any, option: str = "dataset.prepare_workers") -> int:
    """``option`` (``dataset.prepare_workers``, a converter's ``--workers``): auto/null = one per usable CPU core,
    0 = in this process, N = N."""
    from audiotrain.train.data_workers import usable_cores

    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return usable_cores()
    try:
        n = int(value)
        if isinstance(value, bool) or n != float(value) or n < 0:
            raise ValueError
    except (TypeError, ValueError):
        shown = f"{option} {value}" if option.startswith("--") else f"{option}={value!r}"
        raise UserError(f"{shown} is not a number of processes: give auto (one per CPU core, {usable_cores()} here), "
                        f"0 (prepare in {'this' if option.startswith('--') else 'the training'} process) or a whole "
                        f"number.") from None
    return n
