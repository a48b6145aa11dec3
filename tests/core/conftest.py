"""A finished 4-job sweep (tiny ACE-Step, parallel launcher) shared by the sweep, compare and UI tests."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SWEEP_ARGS = ["-m", "model=acestep", "debug=smoke", "trainer.max_steps=6", "trainer.every_n_train_steps=3",
              "trainer.every_plot_step=6", "trainer.sample_steps=2", "trainer.sample_prompts=1",
              "trainer.stdin_control=false", "lora.r=4,8", "lora.alpha=${mul:2,${lora.r}}",
              "scheduler=constant,cosine_restarts", "launcher=parallel"]


@dataclass
class Sweep:
    cwd: Path
    env: dict
    argv: list[str]
    sweep_dir: Path
    first: subprocess.CompletedProcess

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=f"sqlite:///{self.cwd / 'mlflow.db'}")

    def run(self, *argv: str, timeout: int = 400) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "audiotrain.cli.main", *argv], cwd=self.cwd, env=self.env,
                              capture_output=True, text=True, timeout=timeout)


def cli_env(tmp: Path) -> dict:
    return dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", AUDIOTRAIN_CACHE=str(tmp / "cache"))


@pytest.fixture(scope="session")
def sweep4(song_dir, tmp_path_factory) -> Sweep:
    """`audiotrain -m ... lora.r=4,8 'lora.alpha=${mul:2,${lora.r}}' scheduler=constant,cosine_restarts
    launcher=parallel`: four smoke jobs, two at a time in joblib worker processes."""
    cwd = tmp_path_factory.mktemp("sweep4")
    argv = [*SWEEP_ARGS, f"data={song_dir}"]
    sweep = Sweep(cwd, cli_env(cwd), argv, cwd, None)  # type: ignore[arg-type]
    sweep.first = sweep.run(*argv)
    assert sweep.first.returncode == 0, sweep.first.stderr[-3000:]
    found = list((cwd / "exps" / "logs" / "chinese_rap_lora").glob("sweep_*"))
    assert len(found) == 1, found
    sweep.sweep_dir = found[0]
    return sweep
