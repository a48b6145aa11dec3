"""A `-m` sweep: one MLflow parent run, a child run per job linked to it, job statuses, CSV and best value."""
from __future__ import annotations

import csv
import os
import subprocess
import sys


def test_sweep_parent_and_children(song_dir, tmp_path):
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", AUDIOTRAIN_CACHE=str(tmp_path / "cache"))
    p = subprocess.run([sys.executable, "-m", "audiotrain.cli.main", "-m", "model=acestep", f"data={song_dir}",
                        "debug=smoke", "trainer.max_steps=2", "trainer.every_plot_step=0", "lora.r=4,8",
                        "trainer.stdin_control=false"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stderr[-3000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("audiotrain/acestep")
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("audiotrain.sweep") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 3 and len(children) == 2
    assert sorted(r.data.params["override.lora.r"] for r in children) == ["4", "8"]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["job.0.status"] == parent.data.tags["job.1.status"] == "COMPLETED"
    assert "best/eval/loss" in parent.data.metrics and parent.data.tags["best.run_id"] in {c.info.run_id for c in children}
    sweep_dir = next((tmp_path / "exps" / "logs" / "chinese_rap_lora").glob("multirun_*"))
    rows = list(csv.DictReader((sweep_dir / "sweep_jobs.csv").open()))
    assert sorted(r["override.lora.r"] for r in rows) == ["4", "8"] and all(r["eval/loss"] for r in rows)
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {"sweep_jobs.csv"}

    p = subprocess.run([sys.executable, "-m", "audiotrain.cli.main", "compare", str(sweep_dir)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "lora.r" in p.stdout and "eval/loss" in p.stdout
    assert (sweep_dir / "compare.png").stat().st_size > 10_000
    assert "compare.png" in {a.path for a in client.list_artifacts(parent.info.run_id)}
