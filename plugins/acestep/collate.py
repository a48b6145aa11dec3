"""Batch ACE-Step per-example features (zero right-padding, masks from lengths)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from audiotrain.data.padding import lengths_mask, pad_stack


def collate(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    from audiotrain_acestep.prompts import choose

    # features straight from the cache with K prompt variants (the training module picks one per step first):
    # the first variant, the song's own prompt
    items = [choose(it, None) for it in items]
    latents = pad_stack([it["latents"] for it in items], dim=-1)
    # every frame a song's encoding has is trained on, its last one too: the DC-AE right-pads the audio to whole
    # frames, so the last frame holds the song's final samples (ACE-Step's trainer trains on it: its mask is all
    # ones); only the batch's padding is masked. ("latent_length", floor(samples / frame), leaves that frame out.)
    lengths = torch.tensor([max(1, int(it["latents"].shape[-1])) for it in items], dtype=torch.long)
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
