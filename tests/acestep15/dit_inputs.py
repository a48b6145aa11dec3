"""Random inputs of the tiny ACE-Step 1.5 DiT for the tests (seeded; shapes as the preprocessed files hold)."""
from __future__ import annotations

import torch

from audiotrain_acestep15.dit import AceStepConditionGenerationModel, build_dit


def tiny_model(seed: int = 0, **overrides) -> AceStepConditionGenerationModel:
    torch.manual_seed(seed)
    return build_dit("tiny", **overrides).eval()


def conditions(model: AceStepConditionGenerationModel, lengths: list[tuple[int, int]], seed: int = 1):
    """Encoder states for items with (lyric, text) valid lengths, padded to the longest, one reference each."""
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    b = len(lengths)
    ll, lt = max(a for a, _ in lengths), max(c for _, c in lengths)
    lyric = torch.randn(b, ll, cfg.text_hidden_dim, generator=g)
    text = torch.randn(b, lt, cfg.text_hidden_dim, generator=g)
    lm = torch.zeros(b, ll)
    tm = torch.zeros(b, lt)
    for i, (a, c) in enumerate(lengths):
        lm[i, :a] = 1
        tm[i, :c] = 1
    refer = torch.randn(b, 6, cfg.timbre_hidden_dim, generator=g)
    return model.encode_conditions(text, tm, lyric, lm, refer, torch.arange(b))


def latents(b: int, t: int, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """``(xt (B, T, 64), context (B, T, 128))``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, 64, generator=g), torch.randn(b, t, 128, generator=g)
