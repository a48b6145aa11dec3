"""The cache's view of the frozen parts: one song's posterior (mean, std) and text features, keyed by weights."""
from __future__ import annotations

import torch

from audiotrain_acestep15.features import TextConditionFeature, VaePosteriorFeature
from audiotrain_acestep15.prompts import SongText
from audiotrain_acestep15.text_encoder import Qwen3TextEncoder
from audiotrain_acestep15.vae import build_vae, sample


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


def test_text_feature_is_the_encoder_on_the_one_template():
    enc = Qwen3TextEncoder.tiny(seed=0)
    row = {"caption": "ambient drone", "lyrics": "", "bpm": None, "duration": 12.5, "language": "en"}
    out = TextConditionFeature(enc).encode(row)
    want = enc.encode_songs([SongText.from_mapping(row)])
    assert out["text_hidden"].shape == (want["text_hidden"].shape[1], 32)
    assert torch.equal(out["text_hidden"], want["text_hidden"][0]) and torch.equal(out["lyric_embeds"],
                                                                                   want["lyric_embeds"][0])
    assert out["text_mask"].dtype == torch.long and bool(out["text_mask"].all() and out["lyric_mask"].all())
    assert TextConditionFeature(enc).cache_key() != TextConditionFeature(enc, instruction="Other:").cache_key()
