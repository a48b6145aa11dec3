"""The command a user types, as a subprocess, on a folder with broken files: it finishes and records."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from audiotrain.config.resolvers import exp_name_for

AUDIOTRAIN = [sys.executable, "-m", "audiotrain.cli.main"]


def run(args, cwd, timeout=300):
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", AUDIOTRAIN_CACHE=str(Path(cwd) / "cache"))
    return subprocess.run(AUDIOTRAIN + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow  # two CLI runs (a 24-step smoke run with samples, then resume=auto): ~40 s
def test_smoke_run_with_broken_files_records_mlflow_and_adapter(broken_song_dir, tmp_path):
    p = run(["model=acestep", f"data={broken_song_dir}", "lora.r=16", "debug=smoke", "model.sample_steps=4"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    err = p.stderr
    for name in ("broken_track.mp3", "silent_track.wav", "orphan_prompt.txt", "latin1_song_prompt.txt"):
        assert f"SKIPPED {broken_song_dir / name}" in err or name in err
    assert "2 usable, 4 skipped" in err
    assert "Done." in err and "adapter:" in err.split("Done.")[1]
    # what a person reads ends with the result: no tracebacks, no warnings from our own hooks
    assert "Traceback" not in err and "Callback" not in err and "UserWarning" not in err, err[-3000:]
    assert "Training for 24 optimizer steps (debug=smoke), about 12 epochs of 2 examples." in err
    run_dirs = list((tmp_path / "exps" / "logs" / exp_name_for("acestep", str(broken_song_dir))).iterdir())
    run_dir = [d for d in run_dirs if (d / "summary.json").is_file()][0]
    assert (run_dir / "adapters" / "final" / "acestep" / "pytorch_lora_weights.safetensors").is_file()
    assert (run_dir / "adapters" / "final" / "peft" / "adapter_model.safetensors").is_file()
    assert list((run_dir / "samples").rglob("*.wav")) and list((run_dir / "samples").rglob("*.png"))
    assert "broken_track.mp3" in (run_dir / "bad_inputs.txt").read_text()

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("audiotrain/acestep")
    (r,) = client.search_runs([exp.experiment_id])
    assert r.info.status == "FINISHED"
    assert r.data.params["lora.r"] == "16" and r.data.params["override.lora.r"] == "16"
    assert r.data.params["precision.name"] == "32" and r.data.params["scheduler.name"] == "warmup_linear"
    hist = client.get_metric_history(r.info.run_id, "train/loss")
    assert len(hist) == 24 and {m.step for m in hist} == set(range(1, 25))
    for key in ("train/lr", "train/grad_norm", "train/it_per_s", "train/denoising_loss"):
        assert key in r.data.metrics
    arts = {a.path for a in client.list_artifacts(r.info.run_id)}
    assert {"config.yaml", "command.json", "data", "adapters", "samples"} <= arts
    data_arts = {a.path for a in client.list_artifacts(r.info.run_id, "data")}
    assert "data/bad_inputs.txt" in data_arts
    sample_arts = {a.path for a in client.list_artifacts(r.info.run_id, "samples/targets")}
    assert "samples/targets/input_0_demo_song_01.png" in sample_arts
    assert "samples/targets/target_0_demo_song_01.wav" in sample_arts

    # resume=auto continues the same run directory, step count and MLflow run
    p = run(["model=acestep", f"data={broken_song_dir}", "lora.r=16", "debug=smoke", "resume=auto",
             "trainer.max_steps=30", "trainer.every_plot_step=0"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"Resuming from {run_dir / 'checkpoints' / 'last.ckpt'}" in p.stderr
    (r2,) = client.search_runs([exp.experiment_id])
    assert r2.info.run_id == r.info.run_id and r2.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(r.info.run_id, "train/loss")]
    assert sorted(steps) == list(range(1, 31))


def test_bad_config_is_one_message_not_a_traceback(tmp_path):
    p = run(["model=acestep", "model.preset=tiny", f"data={tmp_path / 'missing'}", "lora.r=0", "precision=fp8"], tmp_path)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    assert "precision=fp8 is unknown" in p.stderr and "lora.r=0 is not a positive integer" in p.stderr
    assert "does not exist" in p.stderr


def test_cfg_job_prints_the_composed_config(tmp_path):
    p = run(["--cfg", "job", "model=acestep", "model.preset=tiny", "lora.r=8", "precision=bf16-mixed"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert "r: 8" in p.stdout and "name: bf16-mixed" in p.stdout and "preset: tiny" in p.stdout
