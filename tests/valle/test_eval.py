"""Audio evaluation: the mel distance itself, the periodic eval/mel_distance and ``mode=eval`` on tiny VALL-E."""
from __future__ import annotations

import pytest

import json
import math
import os
import subprocess
import sys

import torch

from audiotrain.tracking.mel_distance import mel_distance
from audiotrain.config.resolvers import exp_name_for

SR = 24000


def _sine(freq: float, seconds: float = 1.0, sr: int = SR) -> torch.Tensor:
    t = torch.arange(int(seconds * sr)) / sr
    return 0.5 * torch.sin(2 * math.pi * freq * t)


def test_mel_distance_is_zero_for_identical_audio():
    x = _sine(440.0) + 0.01 * torch.randn(SR, generator=torch.Generator().manual_seed(0))
    assert mel_distance(x, x.clone(), SR) == 0.0
    assert mel_distance(x[None], x[None, None], SR) == 0.0  # channel axes are averaged away


def test_mel_distance_separates_frequencies_and_is_symmetric():
    a, b = _sine(440.0), _sine(880.0)
    d = mel_distance(a, b, SR)
    assert d > 0.5
    assert abs(d - mel_distance(b, a, SR)) < 1e-6
    assert mel_distance(a, _sine(450.0), SR) < d  # a near pitch is closer than an octave


def test_mel_distance_grows_with_noise_and_cuts_to_the_shorter_length():
    clean = _sine(300.0) + 0.5 * _sine(1200.0)
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(SR, generator=g)
    values = [mel_distance(clean + level * noise, clean, SR) for level in (0.001, 0.01, 0.05, 0.2, 0.8)]
    assert all(lo < hi for lo, hi in zip(values, values[1:])), values
    # extra tail on one side is ignored; very short signals are padded to the FFT size
    assert mel_distance(torch.cat([clean, noise]), clean, SR) == 0.0
    assert mel_distance(clean[:300], clean[:400], SR) == 0.0


@pytest.mark.slow  # over 20 s on 2 cores: make test runs it, make test-fast leaves it out
def test_periodic_eval_then_mode_eval_logs_mel_distance(valle_cfg, voice_dir, tmp_path):
    from audiotrain.train.run import train

    s = train(valle_cfg("trainer.max_steps=2", "trainer.eval_every_n_steps=2", "trainer.every_n_train_steps=2",
                        "trainer.accumulate_grad_batches=1", "dataset.batch_size=2", "model.eval_max_ar_steps=8",
                        "trainer.eval_audio=true", "trainer.eval_prompts=2", run="trained"))
    assert [step for step, _ in s["eval_mel_distance"]] == [0, 2], s["eval_mel_distance"]
    assert all(math.isfinite(v) and v > 0 for _, v in s["eval_mel_distance"])
    run_dir = tmp_path / "logs" / "trained"
    periodic = run_dir / "eval" / "step_2"
    assert len(list(periodic.glob("hyp_*.wav"))) == 2 and len(list(periodic.glob("ref_*.png"))) == 2

    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    p = subprocess.run([sys.executable, "-m", "audiotrain.cli.main", "model=valle", f"data={voice_dir}",
                        "model.preset=tiny", "mode=eval", f"ckpt_path={ckpt}", "trainer.accelerator=cpu",
                        "dataset.num_workers=0", "model.eval_max_ar_steps=8", "trainer.eval_prompts=2",
                        f"cache_dir={tmp_path / 'cache'}", f"paths.log_dir={tmp_path / 'evals'}"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    assert "eval/mel_distance" in p.stderr and "Eval done." in p.stderr
    assert "train:" not in p.stderr  # evaluation only: no training steps
    (eval_run,) = list((tmp_path / "evals" / exp_name_for("valle", str(voice_dir))).iterdir())
    summary = json.loads((eval_run / "eval_summary.json").read_text())
    assert summary["step"] == 2 and summary["checkpoint"] == str(ckpt.resolve())
    out = eval_run / "eval" / "step_2"
    for kind in ("hyp", "ref"):
        assert len(list(out.glob(f"{kind}_*.wav"))) == 2 and len(list(out.glob(f"{kind}_*.png"))) == 2
    # same weights, same prompts, same seeds: the standalone eval reproduces the training run's last value
    assert abs(summary["mel_distance"] - s["eval_mel_distance"][-1][1]) < 1e-4

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("audiotrain/valle").experiment_id])
    assert run.data.tags["mode"] == "eval" and run.info.status == "FINISHED"
    (m,) = client.get_metric_history(run.info.run_id, "eval/mel_distance")
    assert m.step == 2 and abs(m.value - summary["mel_distance"]) < 1e-9
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "eval/step_2")}
    assert any(x.endswith(".wav") for x in logged) and any(x.endswith(".png") for x in logged)
