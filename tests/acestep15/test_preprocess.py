"""``audiotrain acestep15-preprocess`` as a user runs it: a synthetic folder in ACE-Step 1.5's layout with one corrupt
file -> one report line, per-song ``<id>.pt`` files that load with ``weights_only`` in the spec's keys, shapes and
dtypes (fp32, or bf16 with ``--dtype bfloat16``), and a manifest listing them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from audiotrain.plugins import registry
from audiotrain_acestep15.preprocessed_format import KEYS, METADATA_KEYS

AUDIOTRAIN = [sys.executable, "-m", "audiotrain.cli.main"]


def _run(args, cwd):
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", AUDIOTRAIN_CACHE=str(Path(cwd) / "cache"))
    return subprocess.run(AUDIOTRAIN + [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def test_preprocess_writes_acestep15_song_files_and_manifest(tmp_path):
    songs = registry.get("acestep15").example_data(tmp_path / "songs", 3)
    (songs / "broken.wav").write_bytes(b"not audio")
    (songs / "broken.caption.txt").write_text("a broken song", encoding="utf-8")
    p = _run(["acestep15-preprocess", songs, "--output", tmp_path / "out", "model.variant=tiny"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    report = [line for line in (p.stdout + p.stderr).splitlines() if "SKIPPED" in line]
    assert len(report) == 1 and "broken.wav" in report[0]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["num_samples"] == 3 and len(manifest["samples"]) == 3
    assert sorted(manifest["samples"]) == sorted(f.name for f in (tmp_path / "out").glob("*.pt"))
    for name in manifest["samples"]:
        assert len(Path(name).stem) == 8 and int(Path(name).stem, 16) >= 0
        data = torch.load(tmp_path / "out" / name, weights_only=True)
        assert sorted(data) == sorted(KEYS) and sorted(data["metadata"]) == sorted(METADATA_KEYS)
        T = data["target_latents"].shape[0]
        assert data["target_latents"].shape == (T, 8) and data["context_latents"].shape == (T, 16)  # tiny widths
        assert data["attention_mask"].shape == (T,) and bool((data["attention_mask"] == 1).all())
        L = data["encoder_hidden_states"].shape[0]
        assert data["encoder_hidden_states"].shape == (L, 64) and data["encoder_attention_mask"].shape == (L,)
        assert all(data[k].dtype == torch.float32 for k in KEYS if k != "metadata")
        assert bool((data["context_latents"][:, 8:] == 1).all())  # [silence ‖ ones], never the target
        assert data["metadata"]["preprocess_mode"] == "lora" and data["metadata"]["duration"] == round(T / 25)
    # --dtype bfloat16 (what ACE-Step 1.5 writes on CUDA): the same songs from the same cache, every tensor in bf16
    # and equal to the fp32 file's values rounded
    half = _run(["acestep15-preprocess", songs, "--output", tmp_path / "bf16", "--dtype", "bfloat16",
                 "model.variant=tiny"], tmp_path)
    assert half.returncode == 0 and "bfloat16" in half.stdout + half.stderr, half.stderr[-3000:]
    assert sorted(json.loads((tmp_path / "bf16" / "manifest.json").read_text())["samples"]) == sorted(
        manifest["samples"])
    for name in manifest["samples"]:
        full = torch.load(tmp_path / "out" / name, weights_only=True)
        data = torch.load(tmp_path / "bf16" / name, weights_only=True)
        assert all(data[k].dtype == torch.bfloat16 for k in KEYS if k != "metadata")
        assert all(torch.equal(data[k], full[k].to(torch.bfloat16)) for k in KEYS if k != "metadata")
        assert data["metadata"] == full["metadata"]
    again = _run(["acestep15-preprocess", songs, "--output", tmp_path / "out", "model.variant=tiny"], tmp_path)
    assert again.returncode == 2 and "is not an empty folder" in again.stderr and "Traceback" not in again.stderr
    h = _run(["acestep15-preprocess", "--help"], tmp_path)
    assert h.returncode == 0 and "--output" in h.stdout
