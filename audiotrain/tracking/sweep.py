"""One MLflow parent run per sweep (``audiotrain -m ...``), one child run per job, linked across processes.

A Hydra callback: ``on_multirun_start`` (launching process, before any job) creates the parent run — or, when the
same sweep is run again, continues the one recorded in ``<sweep dir>/mlflow_parent_run_id`` — logs the sweep spec
and exports its id as ``AUDIOTRAIN_PARENT_RUN_ID`` (children tag ``mlflow.parentRunId`` with it, also in launcher
worker processes, which inherit the environment). ``on_job_end`` runs wherever the job ran: it writes the job's
status (COMPLETED, FAILED, STOPPED, NOT_STARTED) to ``<job dir>/job_status.json`` and tags the parent.
``on_multirun_end`` reads every job's status file (so jobs of other processes count), writes the CSV of all jobs,
the best value of ``sweep_metric`` with its overrides, and closes the parent.

Stopping: a job stopped early (``quit``, Ctrl-C, SIGTERM) writes ``<sweep dir>/STOP``; running jobs then save and
stop at their next step, later jobs do not start, and the parent ends KILLED with the reason (``sweep.stopped``).
The same command again continues the sweep (``audiotrain.train.sweep_job``).
"""
from __future__ import annotations

import csv
import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from audiotrain.atomic_write import atomic_path, atomic_write_text
from audiotrain.train.sweep_job import STOP_FILE, request_stop, stop_reason

ENV = "AUDIOTRAIN_PARENT_RUN_ID"
SWEPT_ENV = "AUDIOTRAIN_SWEPT_KEYS"  # children are named after their values of these keys
PARENT_FILE = "mlflow_parent_run_id"
STATUS_FILE = "job_status.json"


def _tracker(config: DictConfig):
    from audiotrain.tracking.mlflow_store import Tracker

    name = OmegaConf.select(config, "model.name") or "sweep"
    return Tracker(str(config.tracking.uri), OmegaConf.select(config, "tracking.experiment") or f"audiotrain/{name}")


def swept_keys(config: DictConfig) -> list[str]:
    """The keys a sweep varies: ``a=1,2`` style overrides and a search sweeper's ``hydra.sweeper.params``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = list(config.hydra.overrides.task)
    keys = [o.get_key_element() for o in OverridesParser.create().parse_overrides(overrides) if o.is_sweep_override()]
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    return list(dict.fromkeys([*keys, *params.keys()]))


class SweepTracking(Callback):
    def __init__(self) -> None:
        self.tracker = None

    def __getstate__(self) -> dict[str, Any]:
        return {"tracker": None}  # launchers pickle callbacks into their workers; the parent run stays here

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / STOP_FILE).unlink(missing_ok=True)  # left by the stopped run this one continues
        _catch_stop_signals(sweep_dir)
        keys = swept_keys(config)
        os.environ[SWEPT_ENV] = ",".join(keys)
        overrides = list(config.hydra.overrides.task)
        atomic_write_text(sweep_dir / "sweep_command.txt", "audiotrain -m " + " ".join(overrides) + "\n")
        _ACTIVE.clear()
        _ACTIVE["dir"] = str(sweep_dir)
        if OmegaConf.select(config, "tracking.name") != "mlflow":
            return
        self.tracker = _tracker(config)
        parent_file = sweep_dir / PARENT_FILE
        previous = parent_file.read_text().strip() if parent_file.is_file() else None
        shown = " ".join(o for o in overrides if o.partition("=")[0] in keys or o.startswith("hparams_search=")) \
            or sweep_dir.name
        run_id = self.tracker.start(f"sweep {shown}", tags={"audiotrain.sweep": "parent", "sweep_dir": str(sweep_dir)},
                                    run_id=previous)
        if previous == run_id:
            runs = int(self.tracker.client.get_run(run_id).data.tags.get("sweep.runs", "1")) + 1
            self.tracker.set_tags({"sweep.runs": runs})  # how often the sweep was started (resumed)
        params = {"sweep.overrides": " ".join(overrides)}
        space = OmegaConf.select(config, "hydra.sweeper.params")
        if space:
            params["sweep.search_space"] = json.dumps(OmegaConf.to_container(space))
            params["sweep.sweeper"] = str(config.hydra.sweeper.get("_target_", "")).rsplit(".", 1)[-1]
        self.tracker.log_params(params)
        self.tracker.set_tags({"sweep.axes": ",".join(keys), "sweep.metric": str(config.get("sweep_metric"))})
        os.environ[ENV] = run_id
        atomic_write_text(parent_file, run_id + "\n")
        self._save_views(config)  # the UI's page of this sweep's jobs works while they run
        _ACTIVE.update(parent=run_id, uri=self.tracker.uri)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if str(OmegaConf.select(config, "hydra.mode")) != "RunMode.MULTIRUN":
            return  # Hydra calls this after single runs too
        num = int(config.hydra.job.num)
        status = getattr(job_return.status, "name", str(job_return.status))
        record = {"job": num, "overrides": " ".join(config.hydra.overrides.task), "status": status}
        out_dir = Path(str(config.hydra.runtime.output_dir))
        if status != "COMPLETED":
            record["error"] = f"{type(job_return._return_value).__name__}: {job_return._return_value}"[:500]
        else:  # returned normally, but perhaps stopped early, or never started because the sweep was stopping
            try:
                summary = json.loads((out_dir / "summary.json").read_text())
            except (OSError, ValueError):
                summary = None
            stopping = stop_reason(Path(str(config.hydra.sweep.dir)).resolve()) is not None
            if summary is not None and summary.get("diverged"):
                status = record["status"] = "DIVERGED"  # audiotrain.train.nonfinite stopped it
                record["error"] = str(summary["diverged"])[:500]
            elif summary is not None and not summary.get("completed", True):
                status = record["status"] = "STOPPED"
            elif summary is None and stopping:
                status = record["status"] = "NOT_STARTED"
        if out_dir.is_dir():
            atomic_write_text(out_dir / STATUS_FILE, json.dumps(record, indent=2))
        parent = os.environ.get(ENV)
        if parent and OmegaConf.select(config, "tracking.name") == "mlflow":
            _tracker(config).client.set_tag(parent, f"job.{num}.status", status)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        reason = stop_reason(sweep_dir)
        try:
            if self.tracker is not None:
                self._summarise(config, reason)
        finally:
            _restore_signals()
            for key in (ENV, SWEPT_ENV):
                os.environ.pop(key, None)
            _ACTIVE.clear()
            if reason is not None:
                (sweep_dir / STOP_FILE).unlink(missing_ok=True)
                STOPPED.append((sweep_dir, reason))
            diverged = sorted(n for n, j in job_statuses(sweep_dir).items() if j.get("status") == "DIVERGED")
            if diverged and reason is None:
                DIVERGED.append((sweep_dir, diverged))

    def _summarise(self, config: DictConfig, stopped: str | None) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        jobs = job_statuses(sweep_dir)
        from audiotrain.train.val_split import default_metric

        metric = default_metric(config)
        children = self.tracker.client.search_runs([self.tracker.experiment_id],
                                                   filter_string=f"tags.mlflow.parentRunId = '{self.tracker.run_id}'")
        by_job = {r.data.tags.get("audiotrain.job"): r for r in children}
        rows = []
        for num, job in sorted(jobs.items()):
            run = by_job.get(str(num))
            rows.append({"job": num, "status": job["status"], "run_id": run.info.run_id if run else "",
                         "run_name": run.info.run_name if run else job["overrides"],
                         metric: run.data.metrics.get(metric) if run else None,
                         **({k: v for k, v in run.data.params.items() if k.startswith("override.")} if run else {})})
        out = sweep_dir / "sweep_jobs.csv"
        keys = list(dict.fromkeys(k for r in rows for k in r))
        keys.sort(key=lambda k: (k.startswith("override."), 0))
        with atomic_path(out) as tmp, tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        self.tracker.log_artifact(out)
        self.tracker.log_artifact(sweep_dir / "multirun.yaml")  # the sweep's full spec, as Hydra composed it
        self.tracker.set_tags({f"job.{num}.status": job["status"] for num, job in jobs.items()})
        scored = [r for r in rows if r.get(metric) is not None]
        self._report(config, jobs, min(scored, key=lambda r: r[metric]) if scored else None, metric, stopped)
        if scored:
            best = min(scored, key=lambda r: r[metric])
            axes = [f"override.{k}" for k in swept_keys(config)]
            self.tracker.log_metrics({f"best/{metric}": float(best[metric])}, step=0)
            self.tracker.set_tags({"best.run_id": best["run_id"], "best.job": best["job"],
                                   "best.overrides": " ".join(f"{k[len('override.'):]}={best[k]}" for k in axes
                                                              if k in best)})
        if stopped is not None:
            self.tracker.set_tags({"sweep.stopped": stopped})
            self.tracker.finish("KILLED")
            return
        if "sweep.stopped" in self.tracker.client.get_run(self.tracker.run_id).data.tags:
            self.tracker.client.delete_tag(self.tracker.run_id, "sweep.stopped")
        failed = [j for j in jobs.values() if j["status"] != "COMPLETED"]
        self.tracker.finish("FAILED" if failed else "FINISHED")

    def _save_views(self, config: DictConfig) -> str | None:
        """The UI's saved views of this sweep's jobs and of its experiment (``audiotrain.tracking.ui_views``);
        returns the sweep's view key, None when the store refused them (the URLs then open the plain runs page)."""
        from audiotrain.tracking.ui_views import save_experiment_view, save_sweep_view
        from audiotrain.train.val_split import default_metric

        t = self.tracker
        try:
            name = t.client.get_run(t.run_id).info.run_name
            axes = [f"override.{k.lstrip('+~')}" for k in swept_keys(config)]
            key = save_sweep_view(t.client, t.experiment_id, t.run_id, name, axes, default_metric(config))
            save_experiment_view(t.client, t.experiment_id)
            return key
        except Exception as exc:  # never fail a sweep over its UI view
            print(f"audiotrain: the MLflow UI view of this sweep was not saved ({type(exc).__name__}: {exc})")
            return None

    def _report(self, config: DictConfig, jobs: dict, best: dict | None, metric: str, stopped: str | None) -> None:
        """The sweep's closing lines: how its jobs ended, the best one, and its pages in the MLflow UI."""
        from collections import Counter

        from audiotrain.tracking.ui_urls import base_url, experiment_url, run_url, ui_command

        counts = ", ".join(f"{n} {s}" for s, n in sorted(Counter(j["status"] for j in jobs.values()).items()))
        head = f"stopped ({stopped})" if stopped is not None else "finished"
        lines = [f"\nSweep {head}: {len(jobs)} job{'s' * (len(jobs) != 1)} ({counts})"]
        if best is not None:
            lines.append(f"  best {metric}: {best[metric]:.4f}, job {best['job']} ({best['run_name']})")
        key = self._save_views(config)
        t = self.tracker
        base = base_url(t.uri)
        lines.append(f"  its jobs side by side: {experiment_url(base, t.experiment_id, key)}")
        lines.append(f"  the sweep's own run:   {run_url(base, t.experiment_id, t.run_id)}")
        cmd = ui_command(t.uri)
        if cmd:
            lines.append(f"                         (start the UI first: {cmd})")
        print("\n".join(lines), flush=True)


def job_statuses(sweep_dir: Path) -> dict[int, dict[str, Any]]:
    """``{job number: {"status", "overrides", ...}}`` from the status files the jobs wrote."""
    out = {}
    for p in sweep_dir.glob(f"*/{STATUS_FILE}"):
        try:
            record = json.loads(p.read_text())
            out[int(record["job"])] = record
        except (ValueError, KeyError):
            continue
    return out


_ACTIVE: dict[str, str] = {}  # the running sweep of this (launching) process: dir, parent run id, tracking uri
STOPPED: list[tuple[Path, str]] = []  # sweeps of this process that ended stopped: (sweep dir, reason)
DIVERGED: list[tuple[Path, list[int]]] = []  # sweeps of this process with diverged jobs: (sweep dir, job numbers)
_PREVIOUS: dict[int, Any] = {}


def _catch_stop_signals(sweep_dir: Path) -> None:
    """In the launching process: the first Ctrl-C / SIGTERM asks the whole sweep to stop cleanly (running jobs
    save and stop - in launcher workers they got the signal too - and no further job starts); a second Ctrl-C
    stops at once. A job training in this process has its own handlers meanwhile (live control)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):
        if signum == signal.SIGINT and stop_reason(sweep_dir) is not None:
            raise KeyboardInterrupt
        request_stop(sweep_dir, f"{signal.Signals(signum).name} received")

    for sig in (signal.SIGINT, signal.SIGTERM):
        _PREVIOUS[sig] = signal.getsignal(sig)
        signal.signal(sig, handler)


def _restore_signals() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for sig, old in _PREVIOUS.items():
        signal.signal(sig, old if old is not None else signal.SIG_DFL)
    _PREVIOUS.clear()


def mark_interrupted(reason: str) -> Path | None:
    """After a sweep was interrupted at once (a second Ctrl-C): tag the parent run KILLED; returns the sweep dir
    (None outside a sweep)."""
    _restore_signals()
    for key in (ENV, SWEPT_ENV):
        os.environ.pop(key, None)
    active = dict(_ACTIVE)
    _ACTIVE.clear()
    if not active:
        return None
    if active.get("parent"):
        try:
            from mlflow.tracking import MlflowClient

            from audiotrain.tracking.mlflow_store import _Locked

            client = _Locked(MlflowClient(tracking_uri=active["uri"]))
            client.set_tag(active["parent"], "sweep.stopped", reason or "interrupted")
            client.set_terminated(active["parent"], status="KILLED")
        except Exception:  # never hide the stop itself behind a tracking error
            pass
    return Path(active["dir"])
