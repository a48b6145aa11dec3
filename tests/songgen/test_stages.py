"""SongGen's staged recipe as experiment presets (spec songgen.md §1.2): every stage composes with the original
stage's values, each names the stage before it, and two stages run one after the other on the tiny preset —
mixed_pro's step1, then the dual-track step1_5 from its weights (mixed_pro's vocal heads left out, said)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import compose

# stage -> (lr, warmup, epochs, freeze_cross, track_pattern, max_new_frames, the stage it starts from)
STAGES = {
    "mixed_pro/step1": (1e-4, 50000, 100, False, "mixed_pro", 1500, None),
    "mixed_pro/step2_a": (5e-5, 20000, 40, True, "mixed_pro", 1500, "mixed_pro/step1"),
    "mixed_pro/step2_b": (5e-5, 20000, 60, False, "mixed_pro", 1500, "mixed_pro/step2_a"),
    "mixed_pro/step3": (5e-5, 0, 5, False, "mixed_pro", 1500, "mixed_pro/step2_b"),
    "inter_A_V/step1_5": (1e-4, 40000, 50, True, "interleaving_A_V", 3000, "mixed_pro/step1"),
    "inter_A_V/step2_a": (5e-5, 20000, 40, True, "interleaving_A_V", 3000, "inter_A_V/step1_5"),
    "inter_A_V/step2_b": (5e-5, 20000, 60, False, "interleaving_A_V", 3000, "inter_A_V/step2_a"),
    "inter_A_V/step3": (5e-5, 0, 5, False, "interleaving_A_V", 3000, "inter_A_V/step2_b"),
}


def _exp_name(stage: str) -> str:
    return "songgen_" + stage.replace("/", "_")


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_has_the_original_values(stage):
    lr, warmup, epochs, freeze_cross, pattern, frames, previous = STAGES[stage]
    cfg = compose(["model=songgen", f"experiment=songgen/{stage}"])
    assert cfg.optimizer.lr == lr and list(cfg.optimizer.betas) == [0.9, 0.99]
    assert cfg.optimizer.weight_decay == 1e-4 and cfg.optimizer.eps == 1e-8
    assert cfg.scheduler.name == "cosine" and cfg.scheduler.warmup_steps == warmup
    assert cfg.trainer.max_epochs == epochs and cfg.trainer.max_steps == -1
    assert cfg.trainer.accumulate_grad_batches == 4 and cfg.dataset.batch_size == 4
    assert cfg.trainer.gradient_clip_val == 1.0 and cfg.seed == 456
    assert cfg.model.freeze_cross is freeze_cross and cfg.model.track_pattern == pattern
    assert cfg.model.max_new_frames == frames and cfg.lora.enabled is False  # a full fine-tune, as the original
    assert cfg.model.preset == ("mixed_pro" if pattern == "mixed_pro" else "interleaving_A_V")
    assert cfg.exp_name == _exp_name(stage)
    if previous is None:
        assert cfg.model.get("init_from") is None
    else:
        assert Path(cfg.model.init_from).name == _exp_name(previous)


def test_an_adapter_instead_of_a_full_fine_tune_on_the_command_line():
    cfg = compose(["model=songgen", "experiment=songgen/mixed_pro/step2_a", "lora=default", "lora.r=32",
                   "model.preset=tiny"])
    assert cfg.lora.enabled is True and cfg.lora.r == 32 and cfg.model.preset == "tiny"
    assert cfg.model.freeze_cross is True  # the stage's own values stay


def _run(args, cwd):
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", AUDIOTRAIN_CACHE=str(Path(cwd) / "cache"))
    return subprocess.run([sys.executable, "-m", "audiotrain.cli.main", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_step1_then_the_dual_track_stage_from_its_weights(tmp_path):
    from audiotrain.plugins import registry

    data = registry.get("songgen").example_data(tmp_path / "songs", 3)  # songs with vocal and accompaniment stems
    tiny = ["model.preset=tiny", "trainer.max_steps=2", "trainer.accumulate_grad_batches=1", "dataset.batch_size=2",
            "trainer.every_plot_step=0", "tracking=none", "dataset.num_workers=0"]
    p = _run(["model=songgen", "experiment=songgen/mixed_pro/step1", f"data={data}", *tiny], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    (step1,) = (tmp_path / "exps" / "logs" / "songgen_mixed_pro_step1").glob("*/adapters/final")
    p = _run(["model=songgen", "experiment=songgen/inter_A_V/step1_5", f"data={data}", *tiny], tmp_path)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    assert "vocal-head tensors (mixed_pro's auxiliary vocal loss) are not used with track_pattern=interleaving_A_V" \
        in " ".join(out.split())
    assert "songgen_mixed_pro_step1" in out  # which weights it started from
    (run,) = (tmp_path / "exps" / "logs" / "songgen_inter_A_V_step1_5").glob("*/summary.json")
    # the frozen cross-attention inputs did not move; the decoder did
    from safetensors.torch import load_file

    before = load_file(str(step1 / "model.safetensors"))
    after = load_file(str(run.parent / "adapters" / "final" / "model.safetensors"))
    assert not any(k.startswith("decoder.vocal_lm_heads.") for k in after)
    cross = [k for k in after if k.startswith(("enc_to_dec_proj.", "lyrics_to_dec_proj.", "embed_prompts."))]
    assert cross and all(before[k].equal(after[k]) for k in cross)
    moved = [k for k in after if k.startswith("decoder.model.decoder.layers.") and not before[k].equal(after[k])]
    assert moved
