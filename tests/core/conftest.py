"""A 4-job sweep (tiny ACE-Step) shared by the sweep, compare and UI tests. It is run the way a user lives it:
the first command is stopped in its third job (`quit@3` in job 2's control file), so job 3 does not start; the
same command again skips jobs 0 and 1, resumes job 2 and runs job 3."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from audiotrain.train.sweep_job import sweep_id
from audiotrain.config.resolvers import exp_name_for

SWEEP_ARGS = ["-m", "model=acestep", "debug=smoke", "trainer.max_steps=6", "trainer.every_n_train_steps=3",
              "trainer.every_plot_step=6", "model.sample_steps=2", "trainer.sample_prompts=1",
              "trainer.stdin_control=false", "lora.r=4,8", "lora.alpha=${mul:2,${lora.r}}",
              "scheduler=constant,cosine_restarts", "scheduler.warmup_steps=0"]  # no warm-up: the two schedules
# differ from step 0 (ACE-Step's 10-step warm-up, which cosine_restarts honours, would cover all 6 steps of both)


@dataclass
class Sweep:
    cwd: Path
    argv: list[str]
    env: dict = field(default_factory=dict)
    sweep_dir: Path | None = None
    runs: list[subprocess.CompletedProcess] = field(default_factory=list)
    after_stop: dict = field(default_factory=dict)  # MLflow state between the stopped and the resumed command

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=f"sqlite:///{self.cwd / 'mlflow.db'}")

    def run(self, *argv: str, timeout: int = 400) -> subprocess.CompletedProcess:
        env = self.env or cli_env(self.cwd)
        return subprocess.run([sys.executable, "-m", "audiotrain.cli.main", *argv], cwd=self.cwd, env=env,
                              capture_output=True, text=True, timeout=timeout)


def cli_env(tmp: Path) -> dict:
    return dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", AUDIOTRAIN_CACHE=str(tmp / "cache"))


def parent_and_children(client, experiment="audiotrain/acestep"):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("audiotrain.sweep") == "parent"]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return parents[0], children, runs


def steps_of(client, run_id: str, metric: str = "train/loss") -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, metric)]


@pytest.fixture(scope="session")
def sweep4(song_dir, tmp_path_factory) -> Sweep:
    """`audiotrain -m ... lora.r=4,8 'lora.alpha=${mul:2,${lora.r}}' scheduler=constant,cosine_restarts`, stopped
    at step 3 of job 2, then the same command again."""
    cwd = tmp_path_factory.mktemp("sweep4")
    argv = [*SWEEP_ARGS, f"data={song_dir}"]
    sweep = Sweep(cwd, argv)
    name = exp_name_for("acestep", str(song_dir))
    sweep.sweep_dir = cwd / "exps" / "logs" / name / f"sweep_{sweep_id([a for a in argv if '=' in a])}"
    (sweep.sweep_dir / "2").mkdir(parents=True)
    (sweep.sweep_dir / "2" / "control").write_text("quit@3\n")  # as if typed while job 2 ran
    sweep.runs.append(sweep.run(*argv))
    assert sweep.runs[0].returncode == 130, sweep.runs[0].stderr[-3000:]
    client = sweep.client()
    parent, children, _ = parent_and_children(client)
    sweep.after_stop = {"parent": parent, "children": {c.info.run_id: c for c in children},
                        "steps": {c.info.run_id: steps_of(client, c.info.run_id) for c in children}}
    sweep.runs.append(sweep.run(*argv))
    assert sweep.runs[1].returncode == 0, sweep.runs[1].stderr[-3000:]
    return sweep
