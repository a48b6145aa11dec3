"""ACE-Step batches train on every frame a song's encoding has — the last, partly filled one too, as ACE-Step's
trainer does (its mask is all ones) — and mask only the batch's right padding."""
from __future__ import annotations

import torch

from audiotrain_acestep.collate import collate


def _item(frames: int, floor_length: int) -> dict:
    return {"latents": torch.randn(8, 16, frames), "latent_length": torch.tensor([floor_length]),
            "text_hidden": torch.zeros(3, 768), "text_mask": torch.ones(3), "lyric_token_ids": torch.zeros(2),
            "lyric_mask": torch.ones(2), "speaker_emb": torch.zeros(512)}


def test_the_last_partial_frame_is_trained_on_and_only_batch_padding_is_masked():
    # 3.5 s at 48 kHz: ceil -> 38 frames of audio, the 38th partly filled (floor = 37)
    batch = collate([_item(38, 37), _item(20, 20)])
    assert batch["latents"].shape == (2, 8, 16, 38)
    assert batch["latent_lengths"].tolist() == [38, 20]
    assert batch["latent_mask"].sum(-1).tolist() == [38, 20]
    assert batch["latent_mask"][0, -1] == 1 and batch["latent_mask"][1, 20:].sum() == 0
