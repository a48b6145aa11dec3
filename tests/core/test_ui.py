"""`audiotrain ui` without a store, and parallel writers on one SQLite store (the served sweep and the browser
are in test_ui_browser.py)."""
from __future__ import annotations

import os
import subprocess
import sys
import time


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
