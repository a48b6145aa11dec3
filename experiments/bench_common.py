"""Helpers shared by the parts of the benchmark (``experiments/bench.py``, run by ``make bench``)."""
from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import subprocess  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

RESULT_TAG = "BENCH_RESULT "
_RECORDERS: list[Any] = []  # every MetricsToTracker run.train creates (their per-step timing)
SEED = 42

_INTERLEAVE: list[Any] = []  # part 1's active interleaving (bench_overhead._Interleaved), read by the Recording callback


# ---------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------
def _setup_torch(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")


def _quiet_run_module():
    """run.train's console, progress bar and per-step timing, captured instead of printed."""
    from audiotrain.train import callbacks as cb
    from audiotrain.train import run as runmod
    from audiotrain.train.console import console

    console.quiet = True  # the report and the file progress bar too
    if not getattr(cb.MetricsToTracker, "_bench_recording", False):
        base = cb.MetricsToTracker

        class Recording(base):  # the same callback, plus a (step, wall, cpu) mark at the end of every step
            # (first in run.train's callback list: everything the framework does after it counts as its next step)
            _bench_recording = True

            def __init__(self, tracker):
                super().__init__(tracker)
                self.marks: list[tuple[int, float, float]] = []
                _RECORDERS.append(self)

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
                if not self.marks or self.marks[-1][0] != trainer.global_step:
                    self.marks.append((trainer.global_step, *_now()))
                    if _INTERLEAVE:  # part 1: the hand loop's step, between this step and the next
                        _INTERLEAVE[0].after_framework_step(trainer.global_step)

        cb.MetricsToTracker = Recording
    return runmod, _RECORDERS


def _register_configs() -> None:
    from audiotrain.config import resolvers
    from audiotrain.plugins import registry

    resolvers.register()
    registry.register_configs()


def _now() -> tuple[float, float]:
    """(wall clock, this process's CPU time). With one torch thread and data loading in the process, CPU-time
    steps/s equals wall-clock steps/s on an idle machine, and other jobs on the machine barely move it."""
    return time.perf_counter(), time.process_time()


def _rates(steps: int, start: tuple[float, float], end: tuple[float, float]) -> dict[str, float]:
    return {"wall": steps / (end[0] - start[0]), "cpu": steps / max(end[1] - start[1], 1e-9)}


def _steps_per_s(marks: list[tuple[int, float, float]], warmup: int) -> dict[str, float]:
    """Steady-state steps/s from the end of step ``warmup`` to the end of the last step."""
    if warmup < 1 or len(marks) <= warmup:
        raise RuntimeError(f"need at least one warm-up step and one step after it (got {len(marks)} steps)")
    start, end = marks[warmup - 1], marks[-1]
    return _rates(end[0] - start[0], start[1:], end[1:])


def _write_songs(folder: Path, count: int, seconds: float) -> None:
    """Synthetic songs, all of the same length (so every batch has the same shape)."""
    from audiotrain_acestep.demo_songs import LYRICS_EN, SongSpec, write_song_folder

    leads = ["synthesizer", "piano"]  # the plucked-string timbre is a slow Python loop; not needed here
    specs = [SongSpec(name=f"bench_song_{i:02d}", bpm=[96, 120, 128, 110][i % 4], root=[9, 0, 7, 2][i % 4],
                      minor=i % 2 == 0, lead=leads[i % 2], seconds=seconds, lyrics=LYRICS_EN[i % len(LYRICS_EN)])
             for i in range(count)]
    write_song_folder(folder, specs)


def _base_overrides(data: Path, work: Path, steps: int, repeat: int, plugin: str = "acestep") -> list[str]:
    return [
        f"model={plugin}", "model.preset=tiny", f"data={data}", "tracking=none", f"seed={SEED}",
        "trainer.accelerator=cpu", "dataset.num_workers=0", "trainer.progress_bar=false",
        "trainer.every_plot_step=0", "trainer.eval_audio=false", f"trainer.max_steps={steps}",
        f"dataset.repeat_count={repeat}",
        f"cache_dir={work / 'cache'}", f"paths.log_dir={work / 'exps'}", "lora.r=16", "exp_name=bench",
    ]


def _loadavg() -> str:
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _verdict(ok: bool) -> str:
    return "[bold green]met[/]" if ok else "[bold red]not met[/]"


# ---------------------------------------------------------------------------------------------
# memory: peak RSS of this process, and (with heap_peak.so preloaded) the peak heap bytes in use
# ---------------------------------------------------------------------------------------------
def _status_mb(field: str) -> float:
    """VmRSS / VmHWM of this process in MB. (Not ru_maxrss: a child's ru_maxrss starts at its parent's RSS at
    fork time, so a benchmark subprocess of a large parent would report the parent's size.)"""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def build_heap_peak(folder: Path) -> Path | None:
    """Compile heap_peak.c into ``folder``; None (and RSS only) when no C compiler is there."""
    import shutil

    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return None
    out = folder / "heap_peak.so"
    src = Path(__file__).with_name("heap_peak.c")
    proc = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(out), str(src), "-ldl"], capture_output=True, text=True)
    return out if proc.returncode == 0 else None


class HeapPeak:
    """The preloaded counters (MB), or None values when heap_peak.so is not loaded in this process."""

    def __init__(self) -> None:
        import ctypes

        lib = ctypes.CDLL(None)
        self._lib = lib if hasattr(lib, "heappeak_peak") else None
        if self._lib is not None:
            for name in ("heappeak_current", "heappeak_peak"):
                getattr(lib, name).restype = ctypes.c_long

    def current(self) -> float | None:
        return self._lib.heappeak_current() / 2**20 if self._lib else None

    def peak(self) -> float | None:
        return self._lib.heappeak_peak() / 2**20 if self._lib else None

    def reset(self) -> None:
        if self._lib:
            self._lib.heappeak_reset()


def child_result(cmd: list[str], env: dict[str, str], timeout: float, mode: str) -> dict:
    """Run a bench subprocess and return the JSON its ``RESULT_TAG`` line carries (its output's tail if it fails)."""
    import json
    import subprocess

    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
    raise RuntimeError(f"bench subprocess --mode {mode} failed (exit {proc.returncode}):\n{tail}")



def bench_child(args, mode: str, work: Path, extra: list[str], heap_peak: str = "",
                env_extra: dict[str, str] | None = None) -> dict:
    """Run ``bench.py --mode MODE --work WORK`` (with the bench's threads and scale, plus ``extra``) in a fresh
    subprocess, ``heap_peak`` preloaded when given, ``env_extra`` added to its environment, and return its result."""
    import sys

    cmd = [sys.executable, str(Path(__file__).resolve().with_name("bench.py")), "--mode", mode, "--work", str(work),
           "--threads", str(args.threads), "--scale", str(args.scale), *extra]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONWARNINGS": "ignore", **(env_extra or {})}
    if heap_peak:
        env["LD_PRELOAD"] = heap_peak
    return child_result(cmd, env, args.child_timeout, mode)
