"""``mode=plan``: the data prepared, the plugin's adjustments said, the plan printed in steps — and nothing
trained, no run directory or MLflow run left behind."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from audiotrain.train.plan import schedule_line
from tests.conftest import compose


def test_schedules_in_steps():
    cfg = compose(["model=acestep", "scheduler=multistep", "optimizer.lr=1e-5", "scheduler.warmup_steps=0"])
    assert schedule_line(cfg, 3, 1500) == "Learning rate 1e-05, scheduler=multistep: × 0.5 at steps 6, 12, 27, 54, 75, 99, 150."
    cfg = compose(["model=acestep", "scheduler=cosine_restarts", "optimizer.lr=1e-5", "scheduler.warmup_steps=0"])
    assert schedule_line(cfg, 3, 1500) == ("Learning rate 1e-05, scheduler=cosine_restarts: cycles of 375 steps "
                                           "starting at steps 0, 375, 750, 1125.")


def test_plan_prints_and_trains_nothing(tmp_path):
    from audiotrain.plugins import registry

    data = registry.get("acestep").example_data(tmp_path / "songs", 3)
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", AUDIOTRAIN_CACHE=str(tmp_path / "cache"))
    p = subprocess.run([sys.executable, "-m", "audiotrain.cli.main", "model=acestep", "model.preset=tiny",
                        f"data={data}", "mode=plan", "trainer.max_epochs=10", "trainer.max_steps=-1",
                        "dataset.batch_size=1", "trainer.accumulate_grad_batches=1", "scheduler=multistep",
                        "scheduler.milestones_epochs=[2,4]", "trainer.every_n_train_steps=10"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    out = " ".join((p.stdout + p.stderr).split())
    assert "Training for 10 epochs of 3 examples = 30 optimizer steps" in out
    assert "Batches: 1 examples per optimizer step (dataset.batch_size=1); 3 steps per epoch." in out
    assert "× 0.5 at steps 6, 12." in out and "Checkpoints and adapters every 10 steps (3 during the run" in out
    assert "Plan only (mode=plan): nothing was trained." in out
    assert not (tmp_path / "exps").exists() and not (tmp_path / "mlflow.db").exists()
