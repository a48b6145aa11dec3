"""The ACE-Step 1.5 backbone on the cached features: masks honoured in a padded batch (each song gets what it gets
alone; at batch 1 masking changes nothing), a posterior sample per training step, reproducible crops, the context
[silence ‖ ones], CFG dropout in training only, and samples through the VAE at 48 kHz stereo."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from audiotrain_acestep15.collate import collate
from audiotrain_acestep15.encoders import make_vae
from tests.acestep15.plugin_kit import tiny


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    plugin, cfg, feats = tiny(tmp_path_factory.mktemp("backbone"))
    backbone = plugin.build_backbone(cfg)
    return plugin, cfg, feats, backbone


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _with(backbone, **objective):
    """The backbone with other objective settings (same weights)."""
    old = backbone.settings
    backbone.settings = dataclasses.replace(old, objective=dataclasses.replace(old.objective, **objective))
    return old


def test_tiny_parts_are_consistent(parts):
    from audiotrain_acestep15.text_encoder import Qwen3TextEncoder
    from audiotrain_acestep15.vae import VAE_PRESETS

    _, _, feats, backbone = parts
    config = backbone.model.config
    assert config.text_hidden_dim == Qwen3TextEncoder.tiny().hidden_size == 32
    assert config.audio_acoustic_hidden_dim == VAE_PRESETS["tiny"].latent_channels == 8
    assert config.in_channels == 24 and config.timbre_hidden_dim == 8
    assert feats[0]["latent_mean"].shape == (50, 8) and feats[0]["encoder_hidden_states"].shape[1] == 64


def test_padded_batch_gives_each_song_the_velocity_it_gets_alone(parts):
    _, _, feats, backbone = parts
    model = backbone.model.eval()
    t = torch.tensor([0.7, 0.3])

    def velocity(items, times, mask_encoder=True):
        batch = collate(items)
        x = batch["latent_mean"] + 0.5
        cond = backbone.conditioning(batch)
        enc_mask = batch["encoder_attention_mask"] if mask_encoder else None
        with torch.no_grad():
            return model.velocity(x, times, cond.encoder_hidden_states, cond.context_latents, cond.attention_mask,
                                  backbone._or_none(enc_mask))

    both = velocity([feats[0], feats[1]], t)
    alone = [velocity([feats[0]], t[:1])[0], velocity([feats[1]], t[1:])[0]]
    assert torch.allclose(both[0, :50], alone[0], atol=1e-5) and torch.allclose(both[1], alone[1], atol=1e-5)
    assert not both[0, 50:].any()  # no velocity on the padding
    unmasked = velocity([feats[0], feats[1]], t, mask_encoder=False)  # the original attends to the padding
    short = 0 if feats[0]["encoder_hidden_states"].shape[0] < feats[1]["encoder_hidden_states"].shape[0] else 1
    assert (unmasked[short] - both[short]).abs().max() > 1e-4


def test_at_batch_one_masking_changes_nothing_bit_for_bit(parts):
    _, _, feats, backbone = parts
    backbone.train()
    batch = collate([feats[1]])
    masked = backbone.training_losses(batch, _gen(3))["loss"]
    old = _with(backbone, mask_encoder_padding=False)
    try:
        unmasked = backbone.training_losses(batch, _gen(3))["loss"]
    finally:
        backbone.settings = old
    assert torch.equal(masked, unmasked)


def test_the_loss_ignores_padded_frames(parts):
    _, _, feats, backbone = parts
    backbone.eval()
    batch = collate([feats[0], feats[1]])
    ref = backbone.training_losses(batch, _gen(1))["loss"]
    noisy = dict(batch, latent_mean=batch["latent_mean"].clone())
    noisy["latent_mean"][0, 50:] = 100.0
    assert torch.equal(backbone.training_losses(noisy, _gen(1))["loss"], ref)


def test_a_training_step_draws_a_posterior_sample_reproducibly(parts):
    _, _, feats, backbone = parts
    batch = collate([feats[0], feats[1]])
    wider = dict(batch, latent_std=batch["latent_std"] * 2)
    backbone.train()
    first = backbone.training_losses(batch, _gen(5))["loss"]
    assert torch.equal(first, backbone.training_losses(batch, _gen(5))["loss"])  # same step: same draws
    assert not torch.equal(first, backbone.training_losses(batch, _gen(6))["loss"])
    assert not torch.equal(first, backbone.training_losses(wider, _gen(5))["loss"])  # the spread is sampled
    backbone.eval()  # fixed-noise / validation losses: the posterior mean, nothing dropped
    out = backbone.training_losses(batch, _gen(5))
    assert torch.equal(out["loss"], backbone.training_losses(wider, _gen(5))["loss"])
    assert float(out["cfg_dropped"]) == 0.0


def test_cfg_dropout_replaces_the_conditions_in_training_only(parts):
    _, _, feats, backbone = parts
    batch = collate([feats[0], feats[1]])
    old = _with(backbone, cfg_dropout=1.0)
    try:
        backbone.train()
        assert float(backbone.training_losses(batch, _gen(2))["cfg_dropped"]) == 1.0
        backbone.eval()
        assert float(backbone.training_losses(batch, _gen(2))["cfg_dropped"]) == 0.0
    finally:
        backbone.settings = old
    backbone.train()
    drops = [float(backbone.training_losses(collate([feats[0]]), _gen(s))["cfg_dropped"]) for s in range(200)]
    assert 0.08 < sum(drops) / len(drops) < 0.22  # the default 0.15


def test_crops_are_random_windows_drawn_from_the_step_generator(parts):
    _, _, feats, backbone = parts
    batch = collate([feats[0], feats[1]])
    old = backbone.settings
    backbone.settings = dataclasses.replace(old, crop_frames=20)
    try:
        mean, std, mask = backbone._crop(batch, _gen(4))
        again = backbone._crop(batch, _gen(4))[0]
        starts = set()
        for seed in range(8):
            m = backbone._crop(batch, _gen(seed))[0]
            full = batch["latent_mean"][1]
            starts.add(next(s for s in range(41) if torch.equal(full[s:s + 20], m[1])))
        backbone.train()
        loss = backbone.training_losses(batch, _gen(4))["loss"]
        assert torch.isfinite(loss) and torch.equal(loss, backbone.training_losses(batch, _gen(4))["loss"])
    finally:
        backbone.settings = old
    assert mean.shape == std.shape == (2, 20, 8) and bool(mask.all()) and torch.equal(mean, again)
    assert len(starts) > 3  # different steps, different windows


def test_the_context_is_silence_then_ones_never_the_target(parts):
    _, cfg, feats, backbone = parts
    x = collate([feats[0]])["latent_mean"]
    ctx = backbone.context(1, 50, x)
    assert ctx.shape == (1, 50, 16)
    silence, _ = make_vae(cfg).encode_posterior(torch.zeros(2, 96000))
    assert torch.allclose(ctx[0, :, :8], silence[25].expand(50, -1))
    assert torch.equal(ctx[..., 8:], torch.ones(1, 50, 8))
    assert not torch.allclose(ctx[0, :, :8], x[0])


def test_samples_are_48khz_stereo_of_each_prompts_length(parts):
    _, _, feats, backbone = parts
    backbone.eval()
    batch = collate([feats[0], feats[1]])
    assert backbone.settings.turbo_sampling  # tiny samples as turbo: 8 steps, no guidance
    wavs, sr = backbone.sample_audio(batch, seed=1)
    assert sr == 48000 and wavs.shape == (2, 2, 60 * 1920)
    assert not wavs[0, :, 50 * 1920:].any() and wavs[0, :, : 50 * 1920].abs().sum() > 0
    assert torch.equal(wavs, backbone.sample_audio(batch, seed=1)[0])
    assert not torch.equal(wavs, backbone.sample_audio(batch, seed=2)[0])
    old = backbone.settings
    backbone.settings = dataclasses.replace(old, variant="base", guided_steps=4)  # base/sft: guided sampling
    try:
        assert not backbone.settings.turbo_sampling
        guided = backbone.sample_audio(batch, seed=1)[0]
    finally:
        backbone.settings = old
    assert guided.shape == wavs.shape and not torch.equal(guided, wavs)
    ref, ref_sr = backbone.reference_audio(batch)
    assert ref_sr == 48000 and ref.shape == wavs.shape


def test_release_size_lora_targets_and_the_parts_training_never_reads(parts):
    from audiotrain.lora.adapter import LoRASettings, expected_trainable
    from tests.conftest import compose

    plugin, _, _, _ = parts
    for preset, targets, per_rank in (("turbo", 192, 688_128), ("xl-base", 256, 1_310_720)):
        cfg = compose(["model=acestep15", f"model.variant={preset}"])
        assert cfg.model.preset == preset
        with torch.device("meta"):
            backbone = plugin.build_backbone(cfg, device="meta")
        names = backbone.default_lora_targets
        assert len(names) == targets and all(n.startswith("decoder.layers.") for n in names)
        root = backbone.adapter_root()
        assert expected_trainable(root, LoRASettings(r=64, target_modules=list(names))) == 64 * per_rank
        assert backbone.frozen_patterns() == ["encoder.*", "tokenizer.*", "detokenizer.*"]
        freed = backbone.release_unused_weights(names)
        assert freed == 608_367_616 + 105_032_198 + 105_011_776  # encoder, FSQ tokenizer, detokenizer (spec §1e)
        assert sum(p.numel() for p in root.parameters()) == (1_575_458_880 if preset == "turbo"
                                                             else 4_168_897_088) + 2048
        assert backbone.frozen_patterns() == []
    cfg = compose(["model=acestep15", "model.variant=turbo", "model.lora_mlp=true", "model.lora_attention=cross"])
    with torch.device("meta"):
        names = plugin.build_backbone(cfg, device="meta").default_lora_targets
    assert len(names) == 24 * 7 and "decoder.layers.23.mlp.down_proj" in names
    assert not any("self_attn" in n for n in names)


def test_a_full_fine_tune_trains_the_decoder_only(parts, tmp_path):
    from audiotrain.train.model_setup import build_model
    from tests.acestep15.plugin_kit import overrides
    from tests.conftest import compose

    plugin, cfg, _, _ = parts
    full = compose(overrides(tmp_path, tmp_path, "lora=none"))
    model = build_model(full, plugin, report=False)
    trainable = {n.split(".")[0] for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert trainable == {"model"}
    names = [n for n, p in model.backbone.model.named_parameters() if p.requires_grad]
    assert names and all(n.startswith("decoder.") or n == "null_condition_emb" for n in names)
