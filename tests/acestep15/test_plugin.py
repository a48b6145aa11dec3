"""ACE-Step 1.5 as a user runs it: ``audiotrain model=acestep15 data=DIR`` (a subprocess, the real CLI) on a synthetic
folder in ACE-Step 1.5's layout with one corrupt file, and the overfit proof on one 4-second song."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from audiotrain_acestep15.example_data import write_song, write_song_folder

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, *overrides: str) -> tuple[subprocess.CompletedProcess, Path]:
    logs = tmp_path / "logs"
    cmd = [sys.executable, "-m", "audiotrain.cli.main", "model=acestep15", "tracking=none",
           "trainer.progress_bar=false", f"paths.log_dir={logs}", f"cache_dir={tmp_path / 'cache'}", *overrides]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    runs = sorted(logs.glob("*/*/summary.json"))
    return out, (runs[-1].parent if runs else logs)


@pytest.mark.slow
def test_smoke_run_reports_the_corrupt_song_and_trains_a_decoder_lora(tmp_path):
    songs = write_song_folder(tmp_path / "songs", count=4)
    (songs / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt this is not audio")
    (songs / "broken.caption.txt").write_text("a song that cannot be decoded")
    out, run = _run(tmp_path, f"data={songs}", "debug=smoke")
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert "4 usable, 1 skipped" in text
    assert "broken.wav" in text and "Traceback" not in text
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 24
    assert {"train/loss", "train/t_mean", "train/cfg_dropped"} <= set(summary["final_metrics"])
    config = json.loads((run / "adapters" / "final" / "peft" / "adapter_config.json").read_text())
    # the corrected trainers' LoRA: r 64, alpha 128, dropout 0.1 on the decoder's self- and cross-attention
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (64, 128, 0.1)
    assert sorted(config["target_modules"]) == sorted(f"decoder.layers.{i}.{a}.{p}" for i in range(2)
                                                      for a in ("self_attn", "cross_attn")
                                                      for p in ("q_proj", "k_proj", "v_proj", "o_proj"))
    # beside it, ACE-Step 1.5's own layout (PEFT on the bare decoder) and the ComfyUI file, at every save
    native = run / "adapters" / "final" / "acestep15"
    own = json.loads((native / "adapter" / "adapter_config.json").read_text())
    assert sorted(own["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"] and own["r"] == 64
    from safetensors import safe_open

    with safe_open(str(native / "adapter" / "adapter_model.safetensors"), "pt") as f:
        keys = sorted(f.keys())
    assert len(keys) == 2 * 2 * 2 * 4 and keys[0].startswith("base_model.model.layers.0.cross_attn.")
    assert (native / "acestep15_comfyui.safetensors").is_file()
    wavs = sorted(run.glob("samples/step_24/pred_*.wav"))
    assert len(wavs) == 2
    info = sf.info(str(wavs[0]))
    assert (info.samplerate, info.channels) == (48000, 2)
    assert abs(info.duration - 2.0) < 0.05 or abs(info.duration - 2.4) < 0.05  # the prompt's song length


@pytest.mark.slow
def test_overfitting_one_4_second_song_drives_the_fixed_noise_loss_down_60_percent(tmp_path):
    write_song(tmp_path / "one", "song", 4.0, seed=3, lyrics="[verse]\nla la la")
    out, run = _run(tmp_path, f"data={tmp_path / 'one'}", "debug=overfit")
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    fixed = json.loads((run / "summary.json").read_text())["train_fixed_loss"]
    assert fixed[-1][0] == 300
    assert fixed[-1][1] <= 0.4 * fixed[0][1], fixed  # measured: 2.357 -> 0.832 (-65%)


@pytest.mark.slow
def test_a_lokr_run_writes_ace_step_15_lokr_file(tmp_path):
    """``audiotrain model=acestep15 ... lora=lokr`` (the issue's XL command, on tiny): the LoKr file ACE-Step 1.5
    loads is written (``lora.init_from`` reads it back: tests/core/test_lora_init_from.py)."""
    from safetensors import safe_open

    songs = write_song_folder(tmp_path / "songs", count=2)
    out, run = _run(tmp_path, f"data={songs}", "debug=smoke", "lora=lokr", "trainer.max_steps=3")
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert "LoKr r=64 alpha=128 on 16 layers: cross_attn.k_proj" in out.stdout + out.stderr  # the model line
    lokr = run / "adapters" / "final" / "acestep15" / "lokr_weights.safetensors"
    with safe_open(str(lokr), "pt") as f:
        header, keys = f.metadata(), list(f.keys())
    assert header["algo"] == "lokr" and header["format"] == "lycoris"
    assert json.loads(header["lokr_config"])["linear_dim"] == 64 and keys[0].startswith("lycoris_layers_")
