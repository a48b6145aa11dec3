"""Run directories: where checkpoints, adapters, samples and the report go; resume lookup."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from audiotrain.atomic_write import atomic_write_text, is_temporary, sweep


# What a run leaves in <run_dir>/checkpoints that a resume continues from: the periodic step=N.ckpt (step=N-v1.ckpt
# when a resumed run writes step N again), last.ckpt, and the manual-step=N.ckpt of save / quit / SIGTERM. Each
# appears complete or not at all (written to a temporary file, then renamed). A kill between a step's step=N.ckpt
# and its last.ckpt leaves step=N.ckpt as the only file of step N - the newest complete checkpoint.
# Lightning names a new last.ckpt last-v1.ckpt when a resumed run's checkpoint settings differ from the old ones.
RESUMABLE = ("last.ckpt", "last-v*.ckpt", "manual-step=*.ckpt", "step=*.ckpt")  # on equal times, the first wins


# What shows a folder is a run directory (a job's output), so a dataset walk does not train on what a run wrote
# there (eval samples, an adapter's files): Hydra's record of the job (``hydra.output_subdir: .hydra``, written
# before the job starts), the bad-input report written while its data loads, the MLflow run it logs to, and the
# record of a sweep (``multirun.yaml``, in the sweep folder above its jobs).
RUN_DIR_MARKERS = (".hydra/config.yaml", "bad_inputs.json", "mlflow_run_id", "multirun.yaml")


def is_run_dir(folder: Path) -> bool:
    """Whether ``folder`` holds what audiotrain (or Hydra, for it) writes into a run or sweep directory."""
    return any(os.path.isfile(folder / m) for m in RUN_DIR_MARKERS)  # os.path: a folder we may not read is no run


def checkpoints_in(dirs: list[Path]) -> list[Path]:
    """Every resumable checkpoint (``RESUMABLE``) in the ``checkpoints`` folders ``dirs``, the most recently written
    first. Never a file a killed save left half-written: those have temporary names (``atomic_write``), which are
    skipped (and swept), and a checkpoint folder (DeepSpeed) a kill left renamed aside is put back first."""
    found: list[tuple[int, int, Path]] = []
    for d in dirs:
        if not d.is_dir():
            continue
        sweep(d, force=True)
        for rank, pattern in enumerate(reversed(RESUMABLE)):
            for p in d.glob(pattern):
                if is_temporary(p.name):
                    continue
                try:
                    found.append((p.stat().st_mtime_ns, rank, p))
                except FileNotFoundError:  # removed meanwhile (keep-last-N)
                    continue
    return [p for _, _, p in sorted(found, reverse=True)]


def all_checkpoints(log_dir: str | Path, exp_name: str) -> list[Path]:
    """The checkpoints ``resume=auto`` may continue, ``<log_dir>/<exp_name>/*/checkpoints``, newest first."""
    root = Path(log_dir) / exp_name
    return checkpoints_in(sorted(root.glob("*/checkpoints"))) if root.is_dir() else []


def find_latest_checkpoint(log_dir: str | Path, exp_name: str) -> Path | None:
    """Newest resumable checkpoint under ``<log_dir>/<exp_name>/*/checkpoints`` (unchecked: ``resume=auto`` takes
    the newest complete one, ``checkpoint_check.newest_good``)."""
    found = all_checkpoints(log_dir, exp_name)
    return found[0] if found else None


def saved_adapters(run_dir: Path) -> list[Path]:
    """The run's complete adapter folders (``adapters/step_N``, ``manual_step_N``, ``final``), oldest first;
    folders being written or left by a killed save (temporary names) are not among them."""
    root = Path(run_dir) / "adapters"
    if not root.is_dir():
        return []
    sweep(root, force=True)
    return sorted((d for d in root.iterdir() if d.is_dir() and not is_temporary(d.name)),
                  key=lambda d: d.stat().st_mtime)


def run_dir_of_checkpoint(ckpt: Path) -> Path:
    return ckpt.resolve().parent.parent


def read_run_id(run_dir: Path) -> str | None:
    p = run_dir / "mlflow_run_id"
    return p.read_text().strip() if p.is_file() else None


def write_run_id(run_dir: Path, run_id: str) -> None:
    atomic_write_text(run_dir / "mlflow_run_id", run_id + "\n")


def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_command(run_dir: Path, overrides: list[str]) -> Path:
    p = run_dir / "command.json"
    atomic_write_text(p, json.dumps({"argv": sys.argv, "overrides": overrides, "git_sha": git_sha()}, indent=2))
    return p


def summary_file(run_dir: Path, summary: dict[str, Any]) -> Path:
    p = run_dir / "summary.json"
    atomic_write_text(p, json.dumps(summary, indent=2, default=str))
    return p
