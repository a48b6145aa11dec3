"""Collating ACE-Step 1.5 songs of different lengths: right-padding with zeros and masks for frames and conditions."""
from __future__ import annotations

import pytest
import torch

from audiotrain_acestep15.collate import collate
from tests.acestep15.plugin_kit import tiny


@pytest.fixture(scope="module")
def feats(tmp_path_factory):
    return tiny(tmp_path_factory.mktemp("collate"))[2]


def test_songs_of_different_lengths_are_padded_with_masks(feats):
    a, b = feats[0], feats[1]
    ta, tb = a["latent_mean"].shape[0], b["latent_mean"].shape[0]
    la, lb = a["encoder_hidden_states"].shape[0], b["encoder_hidden_states"].shape[0]
    assert (ta, tb) == (50, 60)  # 2.0 s and 2.4 s at 25 frames/s
    assert la != lb  # different captions and lyrics: different condition lengths
    batch = collate([a, b])
    assert batch["latent_mean"].shape == batch["latent_std"].shape == (2, 60, 8)
    assert batch["latent_lengths"].tolist() == [50, 60]
    assert batch["attention_mask"].sum(1).tolist() == [50.0, 60.0]
    assert torch.equal(batch["latent_mean"][0, :50], a["latent_mean"]) and not batch["latent_mean"][0, 50:].any()
    assert torch.equal(batch["latent_std"][1], b["latent_std"])
    longest = max(la, lb)
    assert batch["encoder_hidden_states"].shape == (2, longest, 64)
    assert batch["encoder_attention_mask"].sum(1).tolist() == [la, lb]
    short = 0 if la < lb else 1
    assert not batch["encoder_hidden_states"][short, min(la, lb):].any()
    assert set(batch) == {"latent_mean", "latent_std", "latent_lengths", "attention_mask", "encoder_hidden_states",
                          "encoder_attention_mask"}  # the text features stay in the cache


def test_one_song_has_no_padding(feats):
    batch = collate([feats[0]])
    assert bool(batch["attention_mask"].all()) and bool(batch["encoder_attention_mask"].all())
    assert torch.equal(batch["encoder_hidden_states"][0], feats[0]["encoder_hidden_states"])
