"""The TorToiSe plugin as a user runs it (subprocesses on an AIVC training folder spoken by espeak-ng): AIVC's
rules said before training, bad lines reported, DLAS's metric names in MLflow, a ``<step>_gpt.pth`` at every save
that loads strictly, ``mode=plan``, and the overfit proof."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def _run(args, cwd, timeout=600):
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", AUDIOTRAIN_CACHE=str(Path(cwd) / "cache"))
    return subprocess.run([sys.executable, "-m", "audiotrain.cli.main", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def voice(tmp_path_factory) -> Path:
    """4 good lines, one corrupt clip, one too long (12 s), one with a character the tokenizer cannot spell."""
    import numpy as np
    import soundfile as sf

    from audiotrain.plugins import registry

    root = registry.get("tortoise").example_data(tmp_path_factory.mktemp("tortoise") / "voice", 4)
    (root / "audio" / "broken.wav").write_bytes(b"RIFF not really a wav" * 10)
    t = np.arange(int(12 * 22050)) / 22050
    sf.write(str(root / "audio" / "long.wav"), (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 22050,
             subtype="PCM_16")
    sf.write(str(root / "audio" / "short.wav"), (0.3 * np.sin(2 * np.pi * 220 * t[:6615])).astype(np.float32),
             22050, subtype="PCM_16")  # 0.3 s
    (root / "audio" / "hanzi.wav").write_bytes((root / "audio" / "clip1.wav").read_bytes())
    lines = (root / "train.txt").read_text(encoding="utf-8").split("\n")
    lines += ["audio/broken.wav| A broken clip.", "audio/long.wav| A clip that is far too long.",
              "audio/short.wav| Too short.", "audio/hanzi.wav| Caf\u00e9 \u4f60\u597d, once more."]
    (root / "train.txt").write_text("\n".join(lines), encoding="utf-8")
    return root


def _one(pattern: str, root: Path) -> Path:
    (found,) = root.glob(pattern)
    return found


@pytest.mark.slow
def test_smoke_run_reports_adjusts_and_writes_gpt_files(voice, tmp_path):
    p = _run(["model=tortoise", f"data={voice}", "debug=smoke", "trainer.max_steps=6", "trainer.every_n_train_steps=2",
              "trainer.keep_last_adapters=2"], tmp_path)
    out = " ".join((p.stdout + p.stderr).split())
    assert p.returncode == 0, p.stderr[-3000:]
    # AIVC's validation rules, each said, on the 4 usable lines
    assert "Adjusted: batch 128 is larger than the 4 lines: using 4" in out
    assert "AIVC's plan: For 500 epochs with 4 lines in batches of 4" in out
    # the bad lines, each with its reason
    assert "broken.wav: cannot decode audio" in out
    assert "long.wav: longer than dataset.max_duration=6 s: it is skipped, not cut" in out  # debug=smoke: 6 s
    assert "short.wav: 0.30 s is shorter than dataset.min_duration=0.6 s: it is skipped, not padded" in out
    assert "characters the tokenizer cannot spell" in out and "'\u4f60'" in out
    run = _one("exps/logs/*/*/summary.json", tmp_path).parent
    # every save writes <step>_gpt.pth, the whole UnifiedVoice with the LoRA merged in, which loads strictly
    from audiotrain_tortoise.checkpoint import load_autoregressive

    # AIVC's Keep X Previous States: the newest two step folders stay (and final)
    assert sorted(p.name for p in (run / "adapters").iterdir()) == ["final", "step_4", "step_6"]
    for step in (4, 6):
        gpt = run / "adapters" / f"step_{step}" / f"{step}_gpt.pth"
        model = load_autoregressive(gpt, "tiny")
        assert not any("lora" in k for k in model.state_dict())
    final = load_autoregressive(run / "adapters" / "final" / "6_gpt.pth", "tiny")
    base = load_autoregressive(run / "adapters" / "step_4" / "4_gpt.pth", "tiny")
    assert any(not torch.equal(a, b) for a, b in zip(final.state_dict().values(), base.state_dict().values()))
    # DLAS's metric names
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (r,) = client.search_runs([client.get_experiment_by_name("audiotrain/tortoise").experiment_id])
    assert {"train/loss_text_ce", "train/loss_mel_ce", "train/loss_gpt_total", "train/lr"} <= set(r.data.metrics)
    total = r.data.metrics["train/loss_gpt_total"]
    assert total == pytest.approx(0.01 * r.data.metrics["train/loss_text_ce"] + r.data.metrics["train/loss_mel_ce"],
                                  rel=1e-4)


def test_plan_shows_aivc_rules_and_trains_nothing(voice, tmp_path):
    p = _run(["model=tortoise", f"data={voice}", "mode=plan", "trainer.accelerator=cpu"], tmp_path)
    out = " ".join((p.stdout + p.stderr).split())
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Adjusted: batch 128 is larger than the 4 lines: using 4" in out
    assert "Training for 500 epochs of 4 examples = 500 optimizer steps" in out
    assert "Batches: 4 examples per optimizer step in 2 chunks of 2" in out
    assert "× 0.5 at steps 2, 4, 9, 18, 25, 33, 50." in out
    assert "Checkpoints and adapters every 5 steps" in out
    assert not (tmp_path / "exps").exists()


@pytest.mark.slow
def test_overfit_one_clip_drives_mel_ce_below_half(voice, tmp_path):
    p = _run(["model=tortoise", f"data={voice}", "debug=overfit", "optimizer=adamw", "trainer.max_steps=150"],
             tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (r,) = client.search_runs([client.get_experiment_by_name("audiotrain/tortoise").experiment_id])
    mel = [m.value for m in client.get_metric_history(r.info.run_id, "train/loss_mel_ce")]
    assert mel[0] > 5.0 and mel[-1] < 0.5, (mel[0], mel[-1])


@pytest.mark.slow
def test_generate_speaks_a_preview_reproducibly(voice, tmp_path):
    import hashlib

    import soundfile as sf

    p = _run(["model=tortoise", f"data={voice}", "debug=smoke", "trainer.max_steps=2", "trainer.every_plot_step=0"],
             tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    run = _one("exps/logs/*/*/summary.json", tmp_path).parent
    refs = [voice / "audio" / "clip0.wav", voice / "audio" / "clip1.wav"]
    digests = []
    for out in ("a", "b"):
        p = _run(["generate", run, "--text", "the quick brown fox", "--reference", *refs, "--max-codes", "20",
                  "--seed", "3", "--out", tmp_path / out], tmp_path)
        assert p.returncode == 0, p.stderr[-2000:]
        (wav,) = (tmp_path / out).glob("*.wav")
        digests.append(hashlib.sha256(wav.read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    info = sf.info(str(wav))
    assert info.samplerate == 22050 and info.channels == 1 and 0 < info.frames <= 20 * 1024
    for args, expect in ((["--reference", tmp_path / "none.wav"], "is not a usable voice clip"),
                         (["--reference", refs[0], "--text", " "], "--text is empty"),
                         (["--reference", refs[0], "--max-codes", "0"], "--max-codes 0 must be a whole number")):
        p = _run(["generate", run, *args, "--out", tmp_path / "x"], tmp_path)
        assert p.returncode == 2 and expect in p.stderr and "Traceback" not in p.stderr, p.stderr[-1500:]


@pytest.mark.slow
def test_qlora_run_saves_the_adapter_and_merge_writes_the_gpt_file_from_the_unquantised_base(voice, tmp_path):
    """model.quantize=nf4 on GPT-2's Conv1D layers: the saves hold the adapter only (a note says why), and
    ``audiotrain merge`` writes a _gpt.pth that loads strictly and equals the base with the adapter merged."""
    p = _run(["model=tortoise", f"data={voice}", "debug=smoke", "trainer.max_steps=3", "model.quantize=nf4",
              "optimizer.lr=0.01"], tmp_path)
    out = " ".join((p.stdout + p.stderr).split())
    assert p.returncode == 0, p.stderr[-3000:]
    assert "base parameters held in nf4 (model.quantize)" in out
    assert "the whole-model file tortoise's tools load is written from the unquantised base by `audiotrain merge" in out
    run = _one("exps/logs/*/*/summary.json", tmp_path).parent
    final = run / "adapters" / "final"
    assert (final / "peft" / "adapter_model.safetensors").is_file() and not list(final.glob("*_gpt.pth"))
    m = _run(["merge", run, "--out", tmp_path / "merged"], tmp_path)
    assert m.returncode == 0, m.stderr[-3000:]
    from audiotrain.lora import adapter as lora_adapter
    from audiotrain_tortoise.checkpoint import load_autoregressive
    from audiotrain_tortoise.unified_voice import UnifiedVoice

    merged = load_autoregressive(_one("*_gpt.pth", tmp_path / "merged"), "tiny")
    settings, state = lora_adapter.load_peft(final / "peft")
    assert any(v.abs().sum() > 0 for k, v in state.items() if "lora_B" in k)  # it trained
    from audiotrain.models.presets import seeded

    base = seeded(lambda: UnifiedVoice("tiny"))  # the tiny run's base (the plugin seeds it)
    same = {k: torch.equal(v, merged.state_dict()[k]) for k, v in base.state_dict().items()}
    assert not all(same.values())  # the adapter changed the merged weights
    assert all(same[k] for k in same if ".attn.c_attn." not in k and ".c_proj." not in k and ".c_fc." not in k)
