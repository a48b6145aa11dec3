"""Batch ACE-Step per-example features (zero right-padding, masks from lengths)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from audiotrain.data.padding import lengths_mask, pad_stack


def collate(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    latents = pad_stack([it["latents"] for it in items], dim=-1)
    lengths = torch.cat([it["latent_length"].view(1) for it in items]).long()
    lengths = torch.minimum(lengths.clamp_min(1), torch.tensor(latents.shape[-1]))
    frame_mask = lengths_mask(lengths, latents.shape[-1])
    batch = {
        "latents": latents,
        "latent_lengths": lengths,
        "latent_mask": frame_mask,
        "text_hidden": pad_stack([it["text_hidden"] for it in items], dim=0),
        "text_mask": pad_stack([it["text_mask"] for it in items], dim=0),
        "lyric_token_ids": pad_stack([it["lyric_token_ids"] for it in items], dim=0).long(),
        "lyric_mask": pad_stack([it["lyric_mask"] for it in items], dim=0),
        "speaker_emb": torch.stack([it["speaker_emb"] for it in items]),
    }
    # REPA teacher features ("ssl_mert", "ssl_m-hubert"): lengths differ per song, so they stay per-sample lists
    for name in sorted(k for k in items[0] if k.startswith("ssl_")):
        if all(name in it for it in items):
            batch[name] = [it[name] for it in items]
    return batch
