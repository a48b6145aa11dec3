"""A training job inside a ``-m`` sweep: which job it is, and what re-running the same sweep does with it.

A sweep's directory is named after its overrides (``sweep_id``), so the same command finds the same sweep and
each job finds its own directory (``<sweep dir>/<job number>``):

* a job whose ``summary.json`` says it completed is skipped, and its recorded result is returned (so an Optuna
  study replays it);
* a job that was interrupted (``quit``, SIGTERM, Ctrl-C, a crash after a checkpoint) resumes from the newest
  checkpoint in its own directory and continues its MLflow child run;
* a directory that holds a different job (other overrides) is an error, never overwritten.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audiotrain.errors import UserError
from audiotrain.train.run_dir import newest_checkpoint

ID_ENV = "AUDIOTRAIN_SWEEP_ID"
SWEEPERS_AXES = ("hparams_search",)


def sweep_id(overrides: list[str]) -> str:
    """``lora.r=4,8 scheduler=constant,cosine`` → ``lora.r+scheduler-1f2e3d4c``: the swept keys (readable) and
    a hash of every override that changes the jobs (launcher and ``hydra.*`` settings do not)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from audiotrain.config.compose import normalize_overrides

    kept = [o for o in normalize_overrides(overrides)
            if not o.lstrip("+~").startswith(("hydra", "launcher="))]
    axes = []
    for o in OverridesParser.create().parse_overrides(kept):
        key = o.get_key_element()
        if o.is_sweep_override() or key in SWEEPERS_AXES:
            axes.append(str(o.value()) if key in SWEEPERS_AXES else key)
    digest = hashlib.sha1("\n".join(kept).encode()).hexdigest()[:8]
    readable = re.sub(r"[^A-Za-z0-9_.+=-]", "_", "+".join(axes))[:60]
    return f"{readable}-{digest}" if readable else digest


STOP_FILE = "STOP"  # in the sweep dir: a job was stopped; running jobs save and stop, the rest do not start


@dataclass
class SweepJob:
    num: int
    overrides: list[str]
    n_parallel: int      # jobs the launcher runs at once on this machine (1: one after another)
    sweeper: str         # "BasicSweeper", "OptunaSweeper", ...
    sweep_dir: Path | None = None

    def label(self) -> str:
        """The job's values of the swept keys (``lora.r=8 scheduler=cosine``): its child run's name."""
        swept = [k for k in os.environ.get("AUDIOTRAIN_SWEPT_KEYS", "").split(",") if k]
        keep = [o for o in self.overrides if o.split("=")[0].lstrip("+~") in swept] if swept else [
            o for o in self.overrides if o.split("=")[0].lstrip("+~") not in ("data", "model", "cache_dir")]
        from audiotrain.config.compose import unquote

        return " ".join(unquote(o) for o in keep)


def current() -> SweepJob | None:
    """This job when Hydra runs it in a multirun, else None."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
    except (ValueError, ImportError):
        return None
    if hc.mode is None or hc.mode.name != "MULTIRUN":
        return None
    launcher = str(hc.launcher.get("_target_", ""))
    n = int(hc.launcher.get("n_jobs") or 1) if "joblib" in launcher.lower() else 1
    if n < 0:
        n = os.cpu_count() or 1
    return SweepJob(int(hc.job.num), list(hc.overrides.task), max(1, n),
                    str(hc.sweeper.get("_target_", "")).rsplit(".", 1)[-1], Path(str(hc.sweep.dir)).resolve())


def stop_file(job: SweepJob) -> Path | None:
    return job.sweep_dir / STOP_FILE if job.sweep_dir is not None else None


def request_stop(sweep_dir: Path, reason: str) -> None:
    """Stop the whole sweep cleanly: running jobs save a checkpoint and stop at their next step (their live
    control watches this file), jobs not started yet are not started. The launching process reports it."""
    path = sweep_dir / STOP_FILE
    if not path.exists():
        path.write_text(reason + "\n")


def stop_reason(sweep_dir: Path) -> str | None:
    path = sweep_dir / STOP_FILE
    try:
        return path.read_text().strip() or "stopped"
    except OSError:
        return None


def threads_per_job(job: SweepJob) -> int:
    """Torch threads for one of ``job.n_parallel`` jobs sharing this machine's cores."""
    return max(1, (os.cpu_count() or 1) // job.n_parallel)


def own_checkpoint(run_dir: Path) -> Path | None:
    """The newest resumable checkpoint (``run_dir.RESUMABLE``) of this job's own directory."""
    found = newest_checkpoint(run_dir / "checkpoints")
    return found.resolve() if found else None


def _recorded_overrides(run_dir: Path) -> list[str] | None:
    p = run_dir / "command.json"
    if not p.is_file():
        return None
    try:
        return list(json.loads(p.read_text())["overrides"])
    except (ValueError, KeyError, TypeError):
        return None


def check_same_job(run_dir: Path, job: SweepJob) -> None:
    """Refuse to reuse a directory that a different job wrote (e.g. the sweep's values were reordered)."""
    recorded = _recorded_overrides(run_dir)
    if recorded is not None and sorted(recorded) != sorted(job.overrides):
        raise UserError(
            f"sweep job {job.num}'s directory {run_dir} holds a different job ({' '.join(recorded)}), not "
            f"{' '.join(job.overrides)}: move it away, or pass hydra.sweep.dir=NEW_DIR to start a separate sweep.")


def finished_summary(run_dir: Path) -> dict[str, Any] | None:
    """The summary of a job that completed in ``run_dir`` (None if it did not, or never ran)."""
    p = run_dir / "summary.json"
    if not p.is_file():
        return None
    try:
        summary = json.loads(p.read_text())
    except ValueError:
        return None
    return summary if summary.get("completed") else None


def metric_value(summary: dict[str, Any], name: str) -> float | None:
    """The last value of metric ``name`` a job logged (``val/loss``, ``train/loss``, ...)."""
    value = (summary.get("last_metrics") or {}).get(name)
    return float(value) if value is not None else None
