"""DataLoader workers under ``quiet_worker_init``: a SIGTERM or SIGINT sent to the whole process group does not end
them (the loader goes on delivering every batch), while a SIGTERM from their parent - how the DataLoader and
multiprocessing end workers - still does. Run in a child process in its own session, so the group signal reaches
nothing but the child and its workers."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    import torch
    from torch.utils.data import DataLoader, Dataset, get_worker_info
    from audiotrain.train.worker_signals import quiet_worker_init

    class Slow(Dataset):
        def __len__(self):
            return 40
        def __getitem__(self, i):
            time.sleep(0.03)
            return torch.tensor([i, os.getpid()])

    got = []
    signal.signal(signal.SIGTERM, lambda *a: got.append("TERM"))  # the training process: note it, go on
    signal.signal(signal.SIGINT, lambda *a: got.append("INT"))
    init = quiet_worker_init if sys.argv[1] == "shielded" else None
    sig = getattr(signal, sys.argv[2])
    loader = DataLoader(Slow(), batch_size=1, num_workers=2, worker_init_fn=init)
    items, pids = [], set()
    for n, batch in enumerate(loader):
        items.append(int(batch[0, 0]))
        pids.add(int(batch[0, 1]))
        if n == 8:
            # as timeout / SLURM / a terminal's Ctrl-C do: every process of the group, from outside the training
            # process (the kill command, which is in the group too and is done by then)
            subprocess.run(["kill", f"-{sig.name[3:]}", "--", f"-{os.getpgid(0)}"])
    print("items", len(items), "seen", ",".join(got))
    # the parent's own SIGTERM still ends a worker (the DataLoader's terminate, multiprocessing's exit)
    it = iter(DataLoader(Slow(), batch_size=1, num_workers=1, worker_init_fn=init))
    worker = int(next(it)[0, 1])
    try:
        os.kill(worker, signal.SIGTERM)
        for _ in range(100):  # torch's SIGCHLD handler in this process reports the worker's end
            time.sleep(0.05)
        print("worker", worker, "still running after its parent's SIGTERM")
        sys.exit(3)
    except RuntimeError as exc:
        assert "killed by signal: Terminated" in str(exc), exc
    print("parent's SIGTERM ended the worker")
    os._exit(0)  # the second loader's dead worker is the point; leave without its shutdown
""")


def _run(mode: str, sig: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, mode, sig], capture_output=True, text=True, timeout=120,
                          start_new_session=True)


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_shielded_workers_outlive_a_group_signal_and_obey_their_parent(sig):
    out = _run("shielded", sig)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"items 40 seen {sig[3:]}" in out.stdout  # every batch delivered; the main process got the signal
    assert "parent's SIGTERM ended the worker" in out.stdout


def test_without_the_shield_a_group_sigterm_kills_the_workers():
    """The failure the shield prevents (torch's own worker handler dies of a SIGTERM from anyone but the parent)."""
    out = _run("plain", "SIGTERM")
    assert out.returncode != 0 and "items 40" not in out.stdout
    # how the loader notices depends on timing: torch's SIGCHLD check, or the dead worker's closed queue
    assert any(s in out.stderr for s in ("is killed by signal: Terminated", "exited unexpectedly", "EOFError")), \
        out.stderr[-1500:]


GARBAGE_SCRIPT = textwrap.dedent("""
    import gc, sys, weakref
    from torch.utils.data import DataLoader, Dataset
    from audiotrain.train.worker_signals import ShieldedLoader, quiet_worker_init

    class Collecting(Dataset):  # a worker whose allocations run the garbage collector
        def __len__(self):
            return 2
        def __getitem__(self, i):
            gc.collect()
            return i

    gc.disable()  # the next collection in this process is after the fork, as between two epochs it may be
    shielded = sys.argv[1] == "shielded"
    loader_class = ShieldedLoader if shielded else DataLoader
    init = quiet_worker_init if shielded else None  # as every training loader has it
    first = iter(loader_class(Collecting(), num_workers=2, worker_init_fn=init))
    next(first)
    cycle = {"iterator": first}
    cycle["self"] = cycle  # an earlier iterator, garbage in a reference cycle when the next loader forks
    ref = weakref.ref(first)
    del first, cycle
    print(sorted(int(x) for x in loader_class(Collecting(), num_workers=2, worker_init_fn=init)))
    ref()._shutdown_workers()  # its workers stop cleanly (a collection in this process would wait out their join
    gc.enable()                # timeouts: the cycle's queues are finalised before the iterator)
    gc.collect()
""")


@pytest.mark.parametrize("mode", ["shielded", "plain"])
def test_workers_do_not_collect_an_earlier_iterator_they_inherit(mode):
    run = subprocess.run([sys.executable, "-c", GARBAGE_SCRIPT, mode], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "[0, 1]", run.stderr[-2000:]
    if mode == "shielded":
        assert "Traceback" not in run.stderr, run.stderr[-2000:]
    else:  # what the freeze prevents: the inherited iterator's __del__ runs in a worker and fails
        assert "can only test a child process" in run.stderr, run.stderr[-2000:]
