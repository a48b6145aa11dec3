"""TorToiSe's DVAE: the released layout on the meta device against the reference list, codes of shape (B, T/4) in
[0, 8192) that are the nearest codebook columns, decode shapes, and that it stays frozen."""
from __future__ import annotations

import torch

from audiotrain_tortoise.dvae import DiscreteVAE, tiny_dvae
from audiotrain_tortoise.mel import MelSpectrogram
from audiotrain_tortoise.presets import resolve_dvae_config
from tests.ref_keys import ref_keys


def test_release_matches_dvae_pth_on_meta():
    ref = ref_keys("tortoise_dvae")
    with torch.device("meta"):
        model = DiscreteVAE("release")
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == ref["keys"] and list(ours) == list(ref["keys"]) and len(ours) == ref["num_keys"] == 53
    assert sorted(k for k, _ in model.named_buffers()) == sorted(ref["buffer_keys"])
    assert sum(p.numel() for p in model.parameters()) == ref["num_params"] == 51_567_184
    assert sum(v.numel() for v in model.state_dict().values()) == ref["state_dict_numel"] == 59_963_984
    assert {k: v for k, v in ref["config"].items()} == resolve_dvae_config("release")


def test_tiny_uses_the_released_names():
    ref = ref_keys("tortoise_dvae")
    # with dvae.pth's three resblocks the tiny widths give exactly the released names (one resblock shifts them)
    tiny = DiscreteVAE({"preset": "tiny", "num_resnet_blocks": 3})
    assert list(tiny.state_dict()) == list(ref["keys"])
    assert tiny.codebook.embed.shape == (16, 8192) and tiny.encoder[0][0].weight.shape == (8, 80, 3)
    assert DiscreteVAE("tiny").codebook.embed.shape == (16, 8192)


def test_codes_are_the_nearest_codebook_entries():
    dvae = tiny_dvae()
    wav = torch.randn(2, 255995) * 0.1
    mel = MelSpectrogram()(wav)
    codes = dvae.codes(mel)
    assert codes.shape == (2, 250) and codes.dtype == torch.long
    assert 0 <= int(codes.min()) and int(codes.max()) < 8192 and codes.unique().numel() > 10
    assert dvae.codes(torch.randn(3, 80, 172)).shape == (3, 43)
    # brute force: each frame's code is the column at the smallest Euclidean distance
    frames = dvae.encoder(mel[:1]).transpose(1, 2)[0]  # (250, 16)
    dist = torch.cdist(frames.double(), dvae.codebook.embed.t().double())
    assert torch.equal(dist.argmin(1), codes[0])
    assert dvae.decode(codes).shape == (2, 80, 1000)


def test_dvae_is_frozen():
    dvae = tiny_dvae()
    dvae.train()
    assert not dvae.training and not any(p.requires_grad for p in dvae.parameters())
    assert torch.equal(tiny_dvae().codebook.embed, dvae.codebook.embed)  # seeded
