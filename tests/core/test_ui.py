"""`audiotrain ui` serves the embedded store on 127.0.0.1 (started and stopped by its own PID)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_serves_runs_of_the_local_store(tmp_path):
    from audiotrain.tracking.mlflow_store import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    t = Tracker(uri, "audiotrain/acestep")
    t.start("ui-check", {"plugin": "acestep"})
    t.log_params({"lora.r": 16})
    t.finish()
    port = free_port()
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    proc = subprocess.Popen([sys.executable, "-m", "audiotrain.cli.main", "ui", "--port", str(port)], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        body = None
        deadline = time.time() + 90
        while time.time() < deadline and body is None:
            try:
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search", method="POST",
                    data=json.dumps({"max_results": 10}).encode(), headers={"Content-Type": "application/json"})
                body = json.loads(urllib.request.urlopen(req, timeout=5).read())
            except OSError:
                time.sleep(1)
        assert body is not None, "the UI did not answer within 90 s"
        assert "audiotrain/acestep" in [e["name"] for e in body["experiments"]]
        html = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read().decode()
        assert "<html" in html.lower()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_ui_without_a_store_says_what_to_do(tmp_path):
    p = subprocess.run([sys.executable, "-m", "audiotrain.cli.main", "ui"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and "no runs yet" in p.stderr and "make demo" in p.stderr


def test_parallel_writers_share_the_sqlite_store(tmp_path):
    """Four processes logging to one SQLite store at once: none fails with "database is locked"."""
    code = (
        "import sys\nfrom audiotrain.tracking.mlflow_store import Tracker\n"
        f"t = Tracker('sqlite:///{tmp_path / 'mlflow.db'}', 'audiotrain/parallel')\n"
        "t.start('job' + sys.argv[1], {})\n"
        "for s in range(40):\n    t.log_metrics({'train/loss': 1.0 / (s + 1)}, s)\n"
        "t.log_params({'job': sys.argv[1]})\nt.finish()\n"
    )
    # create the store once first (schema migrations are not meant to race)
    from audiotrain.tracking.mlflow_store import Tracker

    Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "audiotrain/parallel")
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i)], env=env, stderr=subprocess.PIPE, text=True)
             for i in range(4)]
    errs = [p.communicate(timeout=240)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errs
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("audiotrain/parallel").experiment_id])
    assert len(runs) == 4 and all(len(client.get_metric_history(r.info.run_id, "train/loss")) == 40 for r in runs)
