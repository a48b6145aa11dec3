"""The MLflow UI addresses audiotrain prints: an experiment's runs page, a run's page, and the command serving them.

MLflow 3.17's UI opens an experiment on its GenAI view (traces, "Detect Issues") unless the URL carries
``workflowType=machine_learning`` after the hash route (else the browser's stored choice, which the page
``audiotrain ui`` serves sets to model training for a browser that has none: ``audiotrain.tracking.ui_app``); every
URL here carries it, so it opens on the runs on any MLflow server. An embedded store (``sqlite:///...``) is served by ``audiotrain ui``
(127.0.0.1:5000 unless ``--host``/``--port`` say otherwise); a tracking server (``tracking.uri=http://...``) serves
its own UI at its own address. A runs page can open one of the views of ``audiotrain.tracking.ui_views`` (which
runs, which columns) through ``viewStateShareKey``.
"""
from __future__ import annotations

import shlex
from pathlib import Path
from urllib.parse import quote

HOST = "127.0.0.1"
PORT = 5000
MODEL_TRAINING = "workflowType=machine_learning"


def is_server(tracking_uri: str | None) -> bool:
    return bool(tracking_uri) and str(tracking_uri).startswith(("http://", "https://"))


def base_url(tracking_uri: str | None = None, host: str = HOST, port: int = PORT) -> str:
    """Where the UI of ``tracking_uri`` is: the tracking server itself, or ``audiotrain ui`` on host:port."""
    if is_server(tracking_uri):
        return str(tracking_uri).rstrip("/")
    if host in ("0.0.0.0", "::", ""):  # listening everywhere: this machine's browser reaches it on loopback
        host = HOST
    return f"http://{host}:{port}"


def experiment_url(base: str, experiment_id: str, view: str | None = None) -> str:
    """The runs page of an experiment in model-training mode, opening the saved view ``view`` when given."""
    query = f"viewStateShareKey={quote(view, safe='')}&{MODEL_TRAINING}" if view else MODEL_TRAINING
    return f"{base}/#/experiments/{experiment_id}/runs?{query}"


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    """The page of one run (its metrics, params, artifacts) in model-training mode."""
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?{MODEL_TRAINING}"


def ui_command(tracking_uri: str | None = None, port: int = PORT, cwd: str | Path | None = None) -> str | None:
    """The command that serves ``tracking_uri`` on ``port``, as typed in ``cwd`` (default: here): ``audiotrain ui``
    for the store of that folder, with ``--uri`` for any other store; None for a tracking server."""
    if is_server(tracking_uri):
        return None
    from audiotrain.tracking.mlflow_store import default_uri

    cmd = "audiotrain ui"
    if tracking_uri and str(tracking_uri) != default_uri(cwd):
        cmd += f" --uri {shlex.quote(str(tracking_uri))}"
    if int(port) != PORT:
        cmd += f" --port {int(port)}"
    return cmd


def run_lines(tracking_uri: str, run_id: str, experiment_id: str | None = None, indent: int = 2) -> list[str]:
    """What a closing message says about where to see a run: its page, and the command serving it (for an
    embedded store). The experiment is looked up when not given; without it, the runs pages of ``audiotrain ui``."""
    if experiment_id is None:
        experiment_id = experiment_of(tracking_uri, run_id)
    cmd = ui_command(tracking_uri)
    pad = " " * indent
    if experiment_id is None:
        return [f"{pad}open the UI:   {cmd or base_url(tracking_uri)} (it prints the runs pages)"]
    lines = [f"{pad}in the UI:     {run_url(base_url(tracking_uri), experiment_id, run_id)}"]
    if cmd:
        lines.append(f"{pad}               (start the UI first: {cmd})")
    return lines


def experiment_of(tracking_uri: str, run_id: str) -> str | None:
    """The experiment id of a run, None when the store cannot say."""
    try:
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=tracking_uri).get_run(run_id).info.experiment_id
    except Exception:
        return None
