"""One MLflow parent run per sweep (``audiotrain -m ...``), one child run per job, linked across processes.

A Hydra callback: ``on_multirun_start`` (launching process, before any job) creates the parent run, logs the
sweep spec and exports its id as ``AUDIOTRAIN_PARENT_RUN_ID`` (children tag ``mlflow.parentRunId`` with it, also
in launcher worker processes that inherit the environment) and writes it to ``<sweep dir>/mlflow_parent_run_id``.
``on_job_end`` records each job's status on the parent (failures too); ``on_multirun_end`` writes the CSV of all
jobs, the best value of ``tracking.sweep_metric`` with its overrides, and closes the parent.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

ENV = "AUDIOTRAIN_PARENT_RUN_ID"
SWEPT_ENV = "AUDIOTRAIN_SWEPT_KEYS"  # children are named after their values of these keys


def _tracker(config: DictConfig):
    from audiotrain.tracking.mlflow_store import Tracker

    name = OmegaConf.select(config, "model.name") or "sweep"
    return Tracker(str(config.tracking.uri), OmegaConf.select(config, "tracking.experiment") or f"audiotrain/{name}")


class SweepTracking(Callback):
    def __init__(self) -> None:
        self.tracker = None
        self.jobs: dict[int, dict[str, Any]] = {}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if OmegaConf.select(config, "tracking.name") != "mlflow":
            return
        self.tracker = _tracker(config)
        sweep_dir = Path(str(config.hydra.sweep.dir))
        overrides = list(config.hydra.overrides.task)
        run_id = self.tracker.start(f"sweep {sweep_dir.name}", tags={"audiotrain.sweep": "parent",
                                                                     "sweep_dir": str(sweep_dir.resolve())})
        self.tracker.log_params({"sweep.overrides": " ".join(overrides)})
        os.environ[ENV] = run_id
        from hydra.core.override_parser.overrides_parser import OverridesParser

        swept = [o.get_key_element() for o in OverridesParser.create().parse_overrides(overrides)
                 if o.is_sweep_override()]
        os.environ[SWEPT_ENV] = ",".join(swept)
        self.tracker.set_tags({"sweep.axes": ",".join(swept)})
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / "mlflow_parent_run_id").write_text(run_id + "\n")

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if self.tracker is None:
            return
        num = int(config.hydra.job.num)
        status = getattr(job_return.status, "name", str(job_return.status))
        self.jobs[num] = {"job": num, "overrides": " ".join(config.hydra.overrides.task), "status": status}
        self.tracker.set_tags({f"job.{num}.status": status})

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.tracker is None:
            return
        metric = str(OmegaConf.select(config, "tracking.sweep_metric") or "eval/loss")
        children = self.tracker.client.search_runs([self.tracker.experiment_id],
                                                   filter_string=f"tags.mlflow.parentRunId = '{self.tracker.run_id}'")
        rows = []
        for run in children:
            rows.append({"run_id": run.info.run_id, "run_name": run.info.run_name, "status": run.info.status,
                         metric: run.data.metrics.get(metric),
                         **{k: v for k, v in run.data.params.items() if k.startswith("override.")}})
        rows.sort(key=lambda r: r["run_name"] or "")
        sweep_dir = Path(str(config.hydra.sweep.dir))
        out = sweep_dir / "sweep_jobs.csv"
        keys = sorted({k for r in rows for k in r}, key=lambda k: (k.startswith("override."), k))
        with out.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        self.tracker.log_artifact(out)
        scored = [r for r in rows if r.get(metric) is not None]
        if scored:
            best = min(scored, key=lambda r: r[metric])
            self.tracker.log_metrics({f"best/{metric}": float(best[metric])}, step=0)
            self.tracker.set_tags({"best.run_id": best["run_id"],
                                   "best.overrides": " ".join(f"{k[len('override.'):]}={v}" for k, v in best.items()
                                                              if k.startswith("override."))})
        failed = [j for j in self.jobs.values() if j["status"] != "COMPLETED"]
        self.tracker.finish("FAILED" if failed else "FINISHED")
        os.environ.pop(ENV, None)
        os.environ.pop(SWEPT_ENV, None)
