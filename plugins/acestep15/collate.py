"""Batch ACE-Step 1.5's per-song features: songs of different lengths right-padded, with masks the objective honours.

Per song (the ``latents`` and ``condition`` features): ``latent_mean`` / ``latent_std`` ``(T, latent)`` and the
condition encoder's ``encoder_hidden_states (L, enc_H)`` / ``encoder_attention_mask (L,)``. The batch:

- ``latent_mean``, ``latent_std`` ``(B, T_max, latent)``: zeros after each song's end;
- ``latent_lengths (B,)`` and ``attention_mask (B, T_max)`` (float, 1 on a song's frames);
- ``encoder_hidden_states (B, L_max, enc_H)`` zero-padded and ``encoder_attention_mask (B, L_max)`` (0 on padding;
  each song's valid positions come first, as the condition encoder packs them).

With one song nothing is padded and both masks are all ones.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from audiotrain.data.padding import lengths_mask, pad_stack


def collate(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    lengths = torch.tensor([int(it["latent_mean"].shape[0]) for it in items], dtype=torch.long)
    mean = pad_stack([it["latent_mean"].float() for it in items], dim=0)
    return {
        "latent_mean": mean,
        "latent_std": pad_stack([it["latent_std"].float() for it in items], dim=0),
        "latent_lengths": lengths,
        "attention_mask": lengths_mask(lengths, mean.shape[1]),
        "encoder_hidden_states": pad_stack([it["encoder_hidden_states"].float() for it in items], dim=0),
        "encoder_attention_mask": pad_stack([it["encoder_attention_mask"].long() for it in items], dim=0),
    }
