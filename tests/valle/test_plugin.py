"""The VALL-E plugin through the real training path: CLI, Try-Me overfit, exact resume, live control."""
from __future__ import annotations

import pytest

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from audiotrain.train.run import train
from audiotrain.config.resolvers import exp_name_for


@pytest.mark.slow  # over 20 s on 2 cores: make test runs it, make test-fast leaves it out
def test_cli_lora_run_on_voices_with_a_broken_clip(voice_dir, tmp_path):
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", AUDIOTRAIN_CACHE=str(tmp_path / "cache"))
    p = subprocess.run([sys.executable, "-m", "audiotrain.cli.main", "model=valle", f"data={voice_dir}",
                        "lora.r=128", "lora.alpha=128", "model.preset=tiny", "debug=smoke", "model.eval_max_ar_steps=8"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "6 usable, 1 skipped" in p.stderr and "broken.wav" in p.stderr
    run_dir = next((tmp_path / "exps" / "logs" / exp_name_for("valle", str(voice_dir))).iterdir())
    final = run_dir / "adapters" / "final"
    from audiotrain_valle import adapter_format

    settings, state = adapter_format.load(final / "valle")
    assert (settings.r, settings.alpha, settings.dropout) == (128, 128, 0.1)
    assert sorted(settings.target_modules) == sorted(["self_attn.q_proj", "self_attn.v_proj", "self_attn.o_proj",
                                                      "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"])
    raw = load_file(str(final / "valle" / "lora.sft"))
    assert "model.layers.0.self_attn.q_proj.lora_A" in raw and not any("k_proj" in k for k in raw)
    assert list((run_dir / "samples").rglob("pred_*.wav"))

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (r,) = client.search_runs([client.get_experiment_by_name("audiotrain/valle").experiment_id])
    assert r.data.params["lora.r"] == "128" and r.data.params["override.lora.alpha"] == "128"
    assert "train/acc" in r.data.metrics and "train/nll" in r.data.metrics


@pytest.mark.slow  # over 20 s on 2 cores: make test runs it, make test-fast leaves it out
def test_try_me_overfits_one_utterance(valle_cfg):
    s = train(valle_cfg("debug=overfit", "trainer.max_steps=250", run="overfit"))
    assert s["final_metrics"]["train/acc"] >= 0.9, s["final_metrics"]


@pytest.mark.slow  # over 20 s on 2 cores: make test runs it, make test-fast leaves it out
def test_resume_mid_epoch_with_the_bucket_batch_sampler(valle_cfg):
    common = ("dataset.batch_size=2", "trainer.accumulate_grad_batches=1", "trainer.every_n_train_steps=2",
              "scheduler.warmup_steps=0", "optimizer.lr=1e-3", "lora.r=4", "lora.alpha=4")
    full = train(valle_cfg("trainer.max_steps=5", *common, run="full"))
    half = train(valle_cfg("trainer.max_steps=2", *common, run="half"))
    resumed = train(valle_cfg("trainer.max_steps=5", *common, f"ckpt_path={half['run_dir']}/checkpoints/last.ckpt",
                              run="ignored"))
    a = load_file(f"{full['adapter_dir']}/peft/adapter_model.safetensors")
    b = load_file(f"{resumed['adapter_dir']}/peft/adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # over 20 s on 2 cores: make test runs it, make test-fast leaves it out
def test_control_file_commands_act_at_their_steps(valle_cfg, tmp_path):
    run_dir = tmp_path / "logs" / "ctl"
    run_dir.mkdir(parents=True)
    (run_dir / "control").write_text("lr 0.01@2\nsave@3\nbogus command\nquit@4\n")
    s = train(valle_cfg("trainer.max_steps=20", "scheduler.warmup_steps=0", "lora.r=4", "lora.alpha=4", run="ctl"))
    assert s["steps"] == 4
    assert (run_dir / "checkpoints" / "manual-step=3.ckpt").is_file()
    log = (run_dir / "control.log").read_text()
    assert "lr" in log and "save" in log and "quit" in log
    assert s["final_metrics"]["train/lr"] == 0.01
