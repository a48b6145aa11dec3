"""MLflow tracking: embedded SQLite store by default, one run per training job.

Params are the flattened composed config (dotted keys, values truncated to MLflow's limit), plus
``override.<key>`` params for what the command line changed, so sweep axes are their own columns.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

PARAM_VALUE_LIMIT = 500
KIND_TAG = "mlflow.experimentKind"
BATCH = 100


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def default_uri(cwd: str | Path | None = None) -> str:
    return f"sqlite:///{Path(cwd or os.getcwd()).resolve() / 'mlflow.db'}"


def artifact_root_for(uri: str) -> str | None:
    """Artifacts of an embedded store live beside its database, in ``mlartifacts/``."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
    return None


def _retry_locked(fn, *args, attempts: int = 40, **kwargs):
    """Call ``fn``; jobs writing one SQLite store at once may see "database is locked": wait and retry."""
    delay = 0.05
    for i in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # MLflow wraps the sqlite error in several exception types
            if "locked" not in str(exc).lower() or i == attempts - 1:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


class _Locked:
    """Proxy of an MlflowClient whose calls retry while the SQLite store is locked by another job."""

    def __init__(self, client):
        self._client = client

    def __getattr__(self, name):
        if name.startswith("__") or name == "_client":  # copy/pickle probing a half-built proxy
            raise AttributeError(name)
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr
        return lambda *a, **k: _retry_locked(attr, *a, **k)


FAILURE_TAG = "audiotrain.failure"  # why the run failed (a divergence), set before it ends FAILED
EARLIER_FAILURE_TAG = "audiotrain.earlier_failure"  # the same, once a resume has continued the run


class Tracker:
    """A thin, explicit MLflow client wrapper (no global fluent state, safe in worker processes)."""

    def __init__(self, uri: str, experiment: str):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        import logging

        for name in ("mlflow.store", "alembic"):  # "Creating initial MLflow database tables..." is not news
            logging.getLogger(name).setLevel(logging.WARNING)
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.client = _Locked(MlflowClient(tracking_uri=uri))
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            root = artifact_root_for(uri)
            location = f"{root}/{experiment.replace('/', '_')}" if root else None
            try:
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
            except Exception:  # created meanwhile by a parallel job
                self.experiment_id = self.client.get_experiment_by_name(experiment).experiment_id
        else:
            self.experiment_id = exp.experiment_id
        self.experiment = experiment
        self.run_id: str | None = None
        # MLflow 3's UI opens an experiment in its GenAI (traces) view unless told it is model training
        exp = self.client.get_experiment(self.experiment_id)
        if exp.tags.get(KIND_TAG) is None:
            self.client.set_experiment_tag(self.experiment_id, KIND_TAG, "custom_model_development")

    def start(self, run_name: str, tags: Mapping[str, str], run_id: str | None = None) -> str:
        if run_id:
            try:
                run = self.client.get_run(run_id)
            except Exception:
                run = None
            if run is not None:
                self.run_id = run_id
                self.client.update_run(run_id, status="RUNNING")
                failure = run.data.tags.get(FAILURE_TAG)
                if failure:  # a continued run is no longer the failure of its earlier attempt (kept for the record)
                    self.client.set_tag(run_id, EARLIER_FAILURE_TAG, failure)
                    self.client.delete_tag(run_id, FAILURE_TAG)
                    note = tags.get("mlflow.note.content", "")
                    self.client.set_tag(run_id, "mlflow.note.content",
                                        f"{note}\n\nContinued after an earlier attempt failed: {failure}"[:5000])
                return run_id
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=dict(tags))
        self.run_id = run.info.run_id
        return self.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        items = [Param(k, _short(v)) for k, v in params.items() if k not in existing]
        for i in range(0, len(items), BATCH):
            self.client.log_batch(self.run_id, params=items[i:i + BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, int(step)) for k, v in metrics.items()]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        p = Path(path)
        if p.is_dir():
            self.client.log_artifacts(self.run_id, str(p), artifact_path)
        elif p.is_file():
            self.client.log_artifact(self.run_id, str(p), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        if self.run_id:
            self.client.set_terminated(self.run_id, status=status)


def _short(v: Any) -> str:
    s = str(v)
    return s if len(s) <= PARAM_VALUE_LIMIT else s[: PARAM_VALUE_LIMIT - 3] + "..."


def override_params(overrides: Iterable[str]) -> dict[str, str]:
    """``lora.r=16`` → ``{"override.lora.r": "16"}`` (sweep axes as their own UI columns)."""
    from audiotrain.config.compose import unquote

    out = {}
    for o in overrides:  # values the CLI quoted (precision='32', an interpolation resolved per job) as typed
        key, sep, value = unquote(o.lstrip("+~")).partition("=")
        if sep:
            out[f"override.{key}"] = value
    return out
