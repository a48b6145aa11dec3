"""DataLoader workers leave a stop to the training process.

``timeout``, Ctrl-C in a terminal and a SLURM time limit signal every process of the job's process group at once.
A worker that died of that signal would crash the next batch fetch (``DataLoader worker ... is killed by signal``)
before the main process, which got the same signal, could save a checkpoint and stop. So a worker ignores SIGINT,
and ignores a SIGTERM unless it comes from its own parent: the DataLoader ending its workers
(``Process.terminate``) and multiprocessing's exit still stop a worker at once, and a worker whose parent is gone
ends too. The sender is known because SIGTERM is blocked in the worker and taken by one thread with
``sigwaitinfo``, which says who sent it (a Python signal handler is not told).

Workers are also forked with the parent's objects frozen for the garbage collector (``gc.freeze``): an earlier
epoch's loader iterator that is garbage in a reference cycle at that moment would otherwise be collected in the
worker, whose ``__del__`` then prints ``AssertionError: can only test a child process`` (it may stop only its own
workers). The parent still collects it.
"""
from __future__ import annotations

import gc
import os
import signal
import threading

from torch.utils.data import DataLoader


def _wait_for_parent_sigterm(parent: int) -> None:
    while True:
        info = signal.sigwaitinfo({signal.SIGTERM})
        if info.si_pid == parent or os.getppid() != parent:
            break
    # die of the signal, as a terminated worker does (its exit code says SIGTERM): unblocked in this thread only
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    os.kill(os.getpid(), signal.SIGTERM)


def shield_worker() -> None:
    """In a worker process (its main thread, before it starts threads of its own): group-wide SIGINT/SIGTERM no
    longer end it; its parent's SIGTERM does. Child processes it starts inherit the blocked SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the training process's handler, copied by fork
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked at birth (shielded_start); ignored now
    threading.Thread(target=_wait_for_parent_sigterm, args=(os.getppid(),), name="sigterm-from-parent",
                     daemon=True).start()


def shielded_start(start):
    """Run ``start`` (what forks a loader's workers) with SIGTERM and SIGINT blocked in this thread, so a worker is
    born with them blocked: a group signal arriving before :func:`shield_worker` runs in it (torch's own worker
    handler would die of it) waits, and is then read and ignored. This process gets any such signal once unblocked."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    frozen_before = gc.get_freeze_count()
    gc.freeze()  # the workers never collect what they inherit (module docstring); the parent does, once unfrozen
    try:
        return start()
    finally:
        if not frozen_before:  # someone froze objects on purpose before (copy-on-write): theirs stay frozen
            gc.unfreeze()
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def quiet_worker_init(worker_id: int, rank: int | None = None) -> None:
    """The DataLoader ``worker_init_fn`` of every training loader: :func:`shield_worker`, then Lightning's worker
    seeding (Lightning adds its own ``worker_init_fn`` only when none is set; ``seed_everything(workers=True)``).
    Use ``functools.partial(quiet_worker_init, rank=global_rank)`` for another rank's seeds."""
    shield_worker()
    if int(os.environ.get("PL_SEED_WORKERS", 0)):
        from lightning.fabric.utilities.seed import pl_worker_init_function

        pl_worker_init_function(worker_id, rank=rank)


class ShieldedLoader(DataLoader):
    """A DataLoader whose worker processes start with the stop signals blocked (:func:`shielded_start`)."""

    def _get_iterator(self):
        if self.num_workers == 0:
            return super()._get_iterator()
        return shielded_start(super()._get_iterator)
