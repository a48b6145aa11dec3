"""The MLflow side of a job: the run (new, continued on resume, or a child of a sweep or of the trained run),
its tags, params (the composed config, the overrides) and the files that explain it (config, command, the
bad-input reports). Training and ``mode=eval`` start their runs here."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from audiotrain.atomic_write import atomic_write_text
from audiotrain.tracking.mlflow_store import Tracker, flatten, override_params
from audiotrain.train import run_dir as rd

#: the data reports a job writes into its run directory (``data_setup``), logged under ``data/``
REPORT_FILES = ("bad_inputs.txt", "bad_inputs.json", "bad_inputs_val.txt", "bad_inputs_val.json")


def write_run_files(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> list[Path]:
    """``config.yaml`` (the composed config, resolved) and ``command.json`` in the run directory."""
    cfg_file = run_dir / "config.yaml"
    atomic_write_text(cfg_file, OmegaConf.to_yaml(OmegaConf.to_container(cfg, resolve=True)))
    return [cfg_file, rd.write_command(run_dir, overrides)]


def start_tracking(cfg: DictConfig, plugin: Any, run_dir: Path, overrides: list[str], report_text: str, *,
                   mode: str = "train", ckpt: Path | None = None, job: Any = None,
                   params: dict[str, Any] | None = None) -> Tracker | None:
    """Start (or, for a resumed training run, continue) the job's MLflow run; None with ``tracking=none``.

    Training: named ``tracking.run_name`` / ``exp_name`` (a sweep job: its swept values), a child of the sweep's
    parent run. ``mode=eval``: ``<name>-eval``, a child of the run that wrote ``ckpt`` when its id is known.
    ``params`` are logged beside the flattened config (e.g. the trainable-parameter count)."""
    if cfg.tracking.name != "mlflow":
        return None
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    tracker = Tracker(str(cfg.tracking.uri), cfg.tracking.get("experiment") or f"audiotrain/{plugin.name}")
    tags = {"plugin": plugin.name, "git_sha": rd.git_sha(), "run_dir": str(run_dir),
            "mlflow.source.name": "audiotrain", "mlflow.source.type": "LOCAL",
            "mlflow.note.content": f"audiotrain {' '.join(overrides)}\n\n{report_text}"[:5000]}
    name = cfg.tracking.get("run_name") or str(cfg.exp_name)
    resume_id = None
    if mode == "eval":
        tags["mode"] = "eval"
        name = f"{name}-eval"
        if ckpt is not None:
            tags["checkpoint"] = str(ckpt)
            parent = rd.read_run_id(rd.run_dir_of_checkpoint(ckpt))
            if parent:
                tags["mlflow.parentRunId"] = parent
    else:
        if os.environ.get("AUDIOTRAIN_PARENT_RUN_ID"):  # a sweep job: child of the sweep's parent run
            tags["mlflow.parentRunId"] = os.environ["AUDIOTRAIN_PARENT_RUN_ID"]
            if job is not None:
                tags["audiotrain.job"] = str(job.num)
                name = cfg.tracking.get("run_name") or job.label() or name
        resume_id = rd.read_run_id(run_dir) if ckpt else None
    run_id = tracker.start(name, tags=tags, run_id=resume_id)
    rd.write_run_id(run_dir, run_id)
    values = flatten(OmegaConf.to_container(cfg, resolve=True))
    values.update(override_params(overrides))
    values.update(params or {})
    tracker.log_params(values)
    for f in ("config.yaml", "command.json"):
        if (run_dir / f).is_file():
            tracker.log_artifact(run_dir / f)
    for f in REPORT_FILES:
        if (run_dir / f).is_file():
            tracker.log_artifact(run_dir / f, "data")
    return tracker
