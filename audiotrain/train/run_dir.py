"""Run directories: where checkpoints, adapters, samples and the report go; resume lookup."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any


# What a run leaves in <run_dir>/checkpoints that a resume continues from: the periodic step=N.ckpt (step=N-v1.ckpt
# when a resumed run writes step N again), last.ckpt, and the manual-step=N.ckpt of save / quit / SIGTERM. Each
# appears complete or not at all (written to a temporary file, then renamed). A kill between a step's step=N.ckpt
# and its last.ckpt leaves step=N.ckpt as the only file of step N - the newest complete checkpoint.
RESUMABLE = ("last.ckpt", "manual-step=*.ckpt", "step=*.ckpt")  # on equal times (coarse clocks), the first wins


def newest_checkpoint(*ckpt_dirs: Path) -> Path | None:
    """The most recently written resumable checkpoint in these ``checkpoints`` folders."""
    found: list[tuple[int, int, Path]] = []
    for d in ckpt_dirs:
        for rank, pattern in enumerate(reversed(RESUMABLE)):
            for p in d.glob(pattern):
                try:
                    found.append((p.stat().st_mtime_ns, rank, p))
                except FileNotFoundError:  # removed meanwhile (keep-last-N)
                    continue
    return max(found)[2] if found else None


def find_latest_checkpoint(log_dir: str | Path, exp_name: str) -> Path | None:
    """Newest resumable checkpoint (``RESUMABLE``: ``last.ckpt``, ``manual-step=N.ckpt``, ``step=N.ckpt``) under
    ``<log_dir>/<exp_name>/*/checkpoints`` (for ``resume=auto``)."""
    root = Path(log_dir) / exp_name
    if not root.is_dir():
        return None
    return newest_checkpoint(*root.glob("*/checkpoints"))


def run_dir_of_checkpoint(ckpt: Path) -> Path:
    return ckpt.resolve().parent.parent


def read_run_id(run_dir: Path) -> str | None:
    p = run_dir / "mlflow_run_id"
    return p.read_text().strip() if p.is_file() else None


def write_run_id(run_dir: Path, run_id: str) -> None:
    (run_dir / "mlflow_run_id").write_text(run_id + "\n")


def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_command(run_dir: Path, overrides: list[str]) -> Path:
    p = run_dir / "command.json"
    p.write_text(json.dumps({"argv": sys.argv, "overrides": overrides, "git_sha": git_sha()}, indent=2))
    return p


def summary_file(run_dir: Path, summary: dict[str, Any]) -> Path:
    p = run_dir / "summary.json"
    p.write_text(json.dumps(summary, indent=2, default=str))
    return p
