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
