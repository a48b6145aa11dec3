"""backend=ddp on a CPU: a real 2-process (gloo) VALL-E training job through the CLI.

Lightning re-runs the command for rank 1 when ``fit`` starts (with Hydra: the parent's run dir,
``hydra.output_subdir=null``). Rank 0 alone writes the run's files, owns the MLflow run and saves the
adapter; the speech batch sampler takes the world size from the process group and each rank trains
on its half of every epoch's batches.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from audiotrain.config.resolvers import exp_name_for

VOICES = {"alice": ("en-us", ["The quick brown fox jumps over the lazy dog.", "She sells sea shells by the sea shore.",
                              "A stitch in time saves nine."]),
          "bob": ("en-gb", ["Hello there, how are you today?", "It is a beautiful morning in the city.",
                            "Please call me back tomorrow."])}


@pytest.fixture(scope="module")
def voices(tmp_path_factory) -> Path:
    import shutil

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    root = tmp_path_factory.mktemp("ddp_voices")
    for spk, (voice, lines) in VOICES.items():
        (root / spk).mkdir()
        for i, text in enumerate(lines):
            subprocess.run(["espeak-ng", "-v", voice, "-w", str(root / spk / f"clip{i}.wav"), text], check=True,
                           capture_output=True)
            (root / spk / f"clip{i}.txt").write_text(text)
    return root


@pytest.mark.slow  # the CLI, then two DDP ranks spawned by it, each importing torch/Lightning/MLflow: ~30 s
def test_ddp_two_cpu_processes_one_run(voices, tmp_path):
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", AUDIOTRAIN_CACHE=str(tmp_path / "cache"),
               OMP_NUM_THREADS="1")
    for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    p = subprocess.run([sys.executable, "-m", "audiotrain.cli.main", "model=valle", f"data={voices}",
                        "model.preset=tiny", "debug=smoke", "backend=ddp", "trainer.devices=2",
                        "trainer.accelerator=cpu", "trainer.max_steps=4", "trainer.accumulate_grad_batches=1",
                        "dataset.batch_size=1", "trainer.every_n_train_steps=2", "trainer.every_plot_step=0",
                        "trainer.eval_audio=false", "trainer.stdin_control=false", "tracking=mlflow"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-4000:]
    # one job: one report, one final message, one run directory shared by both ranks
    assert out.count("Done.") == 1 and out.count("6 usable, 0 skipped") == 1, out[-4000:]
    (run_dir,) = list((tmp_path / "exps" / "logs" / exp_name_for("valle", str(voices))).iterdir())
    assert (run_dir / "config.yaml").is_file() and (run_dir / "summary.json").is_file()
    assert not list(run_dir.glob(".pl_hydra*"))
    # the adapter, written once (by rank 0), and the checkpoints
    assert sorted(d.name for d in (run_dir / "adapters").iterdir()) == ["final", "step_2", "step_4"]
    assert (run_dir / "adapters" / "final" / "peft" / "adapter_model.safetensors").is_file()
    # the sampler split the epoch: 6 single-utterance batches -> 3 per rank, so 4 steps = epoch 1, batch 1
    # (one process would still be in epoch 0 after 4 batches)
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    state = ckpt["audiotrain"]["sampler"]
    assert state["num_replicas"] == 2 and (state["epoch"], state["consumed"]) == (1, 1), state
    assert ckpt["global_step"] == 4
    # one MLflow run, logged by rank 0 only
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("audiotrain/valle").experiment_id])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    (run,) = runs
    assert run.info.status == "FINISHED" and run.data.params["backend.name"] == "ddp"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert steps == sorted(set(steps)) and steps[-1] == 4, steps
    adapters = [a.path for a in client.list_artifacts(run.info.run_id, "adapters")]
    assert sorted(adapters) == ["adapters/final", "adapters/step_2", "adapters/step_4"]
