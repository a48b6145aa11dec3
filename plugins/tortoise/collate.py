"""Batching TorToiSe examples as DLAS's paired_voice_audio loader does (spec tortoise.md §2.4):

- ``text`` (B, Lt): the BPE ids zero-padded (0 is [STOP], DLAS's pad), ``text_lengths`` (B,);
- ``codes`` (B, 250): each clip's DVAE codes of its wav zero-padded to 255,995 samples (cached as such),
  ``wav_lengths`` (B,) in samples;
- ``cond_mels`` (B, n, 80, 172): the conditioning clips cut from the clip's own mel (two random 2-s crops, as
  AIVC's data gives DLAS); a crop of a shorter clip is padded with the mel of silence (log of the floor, divided
  by the norms), which is what DLAS's zero-padded 44,000-sample crop turns into.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from audiotrain.data.padding import pad_batch

CLIPS = "conditioning"


def _silence(mel: torch.Tensor, norms: torch.Tensor | None) -> torch.Tensor:
    from audiotrain_tortoise.mel import LOG_FLOOR

    value = torch.log(torch.tensor(LOG_FLOOR))
    col = value / (norms if norms is not None else torch.ones(mel.shape[0]))
    return col.to(mel.dtype)[:, None]


def collate(items: Sequence[Mapping[str, Any]], mel_norms: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    text, _, _ = pad_batch([it["text_ids"].long() for it in items], dim=0, value=0)
    out: dict[str, torch.Tensor] = {
        "text": text.long(),
        "text_lengths": torch.tensor([int(it["text_ids"].numel()) for it in items]),
        "codes": torch.stack([it["codes"].long() for it in items]),
        "wav_lengths": torch.stack([it["wav_length"].long().reshape(()) for it in items]),
    }
    if CLIPS in items[0]:
        rows = []
        for it in items:
            clips = []
            for c in it[CLIPS]:
                mel, n = c["mel"], int(c["mel_length"])
                if n < mel.shape[-1]:  # padded past the clip's end: the mel of silence, not zeros
                    mel = mel.clone()
                    mel[:, n:] = _silence(mel, mel_norms)
                clips.append(mel)
            rows.append(torch.stack(clips))
        out["cond_mels"] = torch.stack(rows).float()
    return out
