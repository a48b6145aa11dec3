"""``audiotrain ui``: serve the MLflow store on 127.0.0.1, and say which page shows the runs.

It prints the runs page of each experiment that has runs, the most recently used first, opening audiotrain's view of
it (``audiotrain.tracking.ui_views``: the training runs, their losses and what differs between them), in the UI's
model-training mode (``audiotrain.tracking.ui_urls``).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

from audiotrain.tracking.mlflow_store import artifact_root_for, default_uri
from audiotrain.tracking.ui_urls import HOST, PORT, base_url, experiment_url

APP_NAME = "audiotrain"  # the mlflow.app entry point of audiotrain.tracking.ui_app (pyproject.toml)


def ui(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="audiotrain ui", description="Open the MLflow UI for audiotrain runs.")
    ap.add_argument("--uri", default=None, help="tracking store (default: sqlite:///./mlflow.db)")
    ap.add_argument("--port", type=int, default=PORT)
    ap.add_argument("--host", default=HOST)
    args = ap.parse_args(argv)
    uri = args.uri or default_uri()
    if uri.startswith("sqlite:///") and not os.path.exists(uri[len("sqlite:///"):]):
        print(f"audiotrain ui: no runs yet at {uri}: train first (e.g. `make demo`) or pass --uri.", file=sys.stderr)
        return 2
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", args.host,
           "--port", str(args.port), "--workers", "1"]
    if _app_installed():
        cmd += ["--app-name", APP_NAME]  # MLflow's server; its page opens new browsers on the runs (ui_app.py)
    else:
        print("audiotrain ui: the audiotrain UI defaults are not installed (reinstall with `make env` or "
              "`pip install -e .`): a browser new to MLflow opens in its GenAI view.", file=sys.stderr)
    root = artifact_root_for(uri)
    if root:
        cmd += ["--default-artifact-root", root]
    base = base_url(None, args.host, args.port)
    print(f"MLflow UI for {uri} on {base} (Ctrl-C stops it)", flush=True)
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # the server (and the workers it starts) run in their own process group, which we stop when this process is
    # stopped: `kill <pid of audiotrain ui>` (SIGTERM) or Ctrl-C leaves no server behind
    server = subprocess.Popen(cmd, env=env, start_new_session=True)

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        lines = runs_pages(uri, base)  # while the server starts; printed once it answers, below its own log
        _wait_until_up(server, base, 120)
        print("\n".join(lines), flush=True)
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)


def _app_installed() -> bool:
    from importlib.metadata import entry_points

    return any(e.name == APP_NAME for e in entry_points(group="mlflow.app"))


def runs_pages(uri: str, base: str) -> list[str]:
    """One line per experiment with runs, the most recently started first: its name, run count and runs page."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    from audiotrain.tracking.mlflow_store import _Locked
    from audiotrain.tracking.ui_views import save_experiment_view

    client = _Locked(MlflowClient(tracking_uri=uri))
    found = []
    for exp in client.search_experiments(view_type=ViewType.ACTIVE_ONLY):
        runs = client.search_runs([exp.experiment_id], max_results=1000)
        if runs:
            found.append((max(r.info.start_time or 0 for r in runs), exp, len(runs)))
    if not found:
        return ["  no runs in this store yet: train first (e.g. `make demo`)"]
    found.sort(key=lambda f: -f[0])
    lines = ["  the runs, side by side (open in a browser):" if len(found) == 1 else
             f"  {len(found)} experiments, the most recent first (open in a browser):"]
    for _, exp, n in found:
        try:
            view = save_experiment_view(client, exp.experiment_id)
        except Exception:  # a read-only store: the runs page without audiotrain's columns
            view = None
        lines.append(f"  {exp.name} ({n} run{'s' * (n != 1)}): {experiment_url(base, exp.experiment_id, view)}")
    return lines


def _wait_until_up(server: subprocess.Popen, base: str, seconds: float) -> None:
    import time
    import urllib.request

    deadline = time.time() + seconds
    while time.time() < deadline and server.poll() is None:
        try:
            urllib.request.urlopen(f"{base}/health", timeout=2).read()
            return
        except OSError:
            time.sleep(0.3)
