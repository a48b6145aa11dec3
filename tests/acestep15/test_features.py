"""The cache's view of the frozen parts: one song's posterior (mean, std) and its condition (the condition
encoder's outputs on the inference template, nothing else), keyed by weights."""
from __future__ import annotations

import torch

from audiotrain_acestep15 import encoders
from audiotrain_acestep15.features import VaePosteriorFeature
from audiotrain_acestep15.prompts import SongText
from audiotrain_acestep15.vae import build_vae, sample
from tests.conftest import compose


def test_vae_feature_stores_mean_and_std_and_a_step_sample_is_reproducible():
    vae = build_vae("tiny", seed=0)
    feat = VaePosteriorFeature(vae)
    audio = torch.randn(2, 1920 * 3 + 500)
    out = feat.encode({"audio": torch.cat([audio, torch.zeros(2, 4000)], -1), "audio_length": audio.shape[-1]})
    mean, std = vae.encode_posterior(audio)
    assert out["latent_mean"].shape == out["latent_std"].shape == (3, 8)
    assert torch.equal(out["latent_mean"], mean) and torch.equal(out["latent_std"], std)
    step = [sample(out["latent_mean"], out["latent_std"], torch.Generator().manual_seed(11)) for _ in range(2)]
    assert torch.equal(step[0], step[1]) and not torch.equal(step[0], out["latent_mean"])
    assert feat.cache_key() == VaePosteriorFeature(build_vae("tiny", seed=0)).cache_key()
    assert feat.cache_key() != VaePosteriorFeature(build_vae("tiny", seed=1)).cache_key()


def test_condition_feature_is_the_condition_encoder_on_the_inference_template_and_keeps_nothing_else():
    cfg = compose(["model=acestep15", "model.variant=tiny"])
    text, dit = encoders.make_text_encoder(cfg), encoders.build_dit(cfg)
    timbre = encoders.dit_config(cfg).timbre_hidden_dim
    feat = encoders.ConditionFeature(encoders.ConditionParts(text, dit.encoder), "k", timbre)
    row = {"caption": "ambient drone", "lyrics": "[verse]\nla la", "bpm": 90, "language": "en",
           "audio_length": 48000 * 12}
    out = feat.encode(row)
    assert set(out) == {"encoder_hidden_states", "encoder_attention_mask"}  # the Qwen3 features are not held twice
    want = text.encode_songs([SongText.from_mapping(row, duration=12.0)])
    with torch.no_grad():
        states, mask = dit.encode_conditions(want["text_hidden"], want["text_mask"], want["lyric_embeds"],
                                             want["lyric_mask"], torch.zeros(1, 1, timbre), torch.zeros(1, dtype=torch.long))
    assert torch.equal(out["encoder_hidden_states"], states[0]) and torch.equal(out["encoder_attention_mask"], mask[0])
    assert out["encoder_attention_mask"].dtype == torch.long and bool(out["encoder_attention_mask"].all())
    # a song of another length is another prompt ("- duration: N seconds"): another condition
    longer = feat.encode({**row, "audio_length": 48000 * 20})
    assert not torch.equal(longer["encoder_hidden_states"], out["encoder_hidden_states"])
