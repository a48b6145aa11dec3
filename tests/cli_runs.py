"""The CLI as a user types it, for the tests that need a trained run: ``audiotrain ...`` in a subprocess (its cache
in the test's folder), and a tiny LoRA trained for 3 steps at a high learning rate, so the adapter matters."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

AUDIOTRAIN = [sys.executable, "-m", "audiotrain.cli.main"]


def run_cli(args, cwd, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", AUDIOTRAIN_CACHE=str(Path(cwd) / "cache"))
    return subprocess.run(AUDIOTRAIN + [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def tiny_trained_run(plugin: str, work: Path, *extra: str) -> Path:
    """The run directory of ``debug=smoke`` cut to 3 steps at lr 0.05 on the plugin's example data, in ``work``
    (``extra``: more overrides)."""
    from audiotrain.plugins import registry

    data = registry.get(plugin).example_data(work / "songs", 2)
    p = run_cli([f"model={plugin}", f"data={data}", "debug=smoke", "trainer.max_steps=3", "trainer.every_plot_step=0",
                 "optimizer.lr=0.05", "scheduler.warmup_steps=0", *extra], work)
    assert p.returncode == 0, p.stderr[-3000:]
    (run_dir,) = [d for d in (work / "exps" / "logs").glob("*/*") if (d / "summary.json").is_file()]
    return run_dir
