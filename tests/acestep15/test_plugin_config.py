"""The ``acestep15`` model group: the corrected trainers' defaults (all overridable), ``model.variant`` choosing the
preset, the objective options, and the one-sentence errors of ``Plugin.validate``."""
from __future__ import annotations

from pathlib import Path

from audiotrain.plugins import registry
from tests.conftest import compose

PLUGIN = registry.get("acestep15")


def _cfg(*extra: str):
    return compose(["model=acestep15", *extra])


def test_defaults_are_the_corrected_trainers_and_every_one_is_overridable():
    cfg = _cfg()
    assert (cfg.optimizer.lr, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (1e-4, 64, 128, 0.1)
    assert (cfg.trainer.accumulate_grad_batches, cfg.trainer.gradient_checkpointing) == (4, True)
    assert (cfg.model.variant, cfg.model.preset, cfg.dataset.max_duration, cfg.dataset.crop_seconds) == \
        ("turbo", "turbo", 240.0, None)
    assert (cfg.model.objective.timesteps, cfg.model.objective.cfg_dropout) == ("logit_normal", 0.15)
    o = _cfg("optimizer.lr=3e-4", "lora.r=16", "lora.alpha=16", "trainer.accumulate_grad_batches=1",
             "trainer.gradient_checkpointing=false", "model.variant=xl-sft", "dataset.crop_seconds=30")
    assert (o.optimizer.lr, o.lora.r, o.lora.alpha, o.trainer.accumulate_grad_batches) == (3e-4, 16, 16, 1)
    assert (o.model.preset, o.dataset.crop_seconds, o.trainer.gradient_checkpointing) == ("xl-sft", 30, False)


def test_settings_map_the_config_onto_the_objective_and_samplers():
    s = PLUGIN.settings(_cfg("model.preset=tiny", "model.objective.timesteps=turbo", "model.objective.cfg_dropout=0",
                             "dataset.crop_seconds=2.5", "model.sampling.steps=50"))
    assert (s.objective.timesteps, s.objective.cfg_dropout, s.crop_frames) == ("turbo_schedule", 0.0, 62)
    assert (s.variant, s.turbo_sampling, s.guided_steps, s.turbo_steps) == ("tiny", True, 50, 8)
    base = PLUGIN.settings(_cfg("model.variant=base"))
    assert (base.objective.timesteps, base.turbo_sampling, base.guidance, base.crop_frames) == \
        ("logit_normal", False, 7.0, None)
    assert PLUGIN.settings(_cfg("model.variant=xl-turbo")).turbo_sampling


def test_validate_names_each_bad_value_and_its_fix(tmp_path):
    assert PLUGIN.validate(_cfg("model.preset=tiny")) == []
    bad = PLUGIN.validate(_cfg("model.preset=tiny", "model.objective.timesteps=uniform",
                               "model.objective.cfg_dropout=1.5", "model.sampling.sampler=heun",
                               "model.sampling.steps=0", "model.lora_attention=all", "dataset.crop_seconds=-3"))
    text = " ".join(bad)
    assert len(bad) == 6
    for value in ("timesteps=uniform", "cfg_dropout=1.5", "sampler=heun", "steps=0", "lora_attention=all",
                  "crop_seconds=-3"):
        assert value in text
    assert PLUGIN.validate(_cfg("model.preset=huge"))[0].startswith("model.preset=huge is unknown")


def test_released_variants_need_the_checkpoint_folder(tmp_path):
    (problem,) = PLUGIN.validate(_cfg("model.variant=base"))
    assert "model.checkpoint_dir is not set" in problem and "model.preset=tiny" in problem
    (tmp_path / "vae").mkdir()
    (problem,) = PLUGIN.validate(_cfg("model.variant=base", f"model.checkpoint_dir={tmp_path}"))
    assert "acestep-v15-base" in problem and "Qwen3-Embedding-0.6B" in problem


def test_lora_targets_outside_the_decoder_are_refused():
    (problem,) = PLUGIN.validate(_cfg("model.preset=tiny", "lora.target_modules=[q_proj,cross_attn.k_proj]"))
    assert problem.startswith("lora.target_modules has q_proj, which also names condition-encoder")
    assert PLUGIN.validate(_cfg("model.preset=tiny", "lora.target_modules=[cross_attn.q_proj,"
                                                      "decoder.layers.0.self_attn.v_proj]")) == []


def test_the_conf_ships_in_the_package():
    path = PLUGIN.config_options()[("model", "acestep15")]
    assert path.is_file() and Path(path).parent.name == "model"
