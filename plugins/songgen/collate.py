"""Batch SongGen's per-song features into the decoder's inputs and targets.

Per song the cache holds the X-Codec codes of each stream (``codes_mix``, and ``codes_vocal`` / ``codes_acc`` when
the song has stems: LongTensor [K, T] at 50 Hz), the description's T5 states (``text_hidden`` [L, d],
``text_mask`` [L]) and the lyrics ids (``lyrics_ids`` [L], ``[261] + ... + [0]``). Collating applies the track
pattern (``patterns``): single-track patterns delay the mix codes (labels [K, T+K]); dual-track ones delay the
accompaniment and the vocals independently and combine them (``patterns.combine``). Labels are right-padded with
-100 (ignored by the loss), the decoder input is the labels shifted right with BOS first (``shift_right``: -100
becomes PAD), the text states are zero-padded with their mask, the lyrics padded with 0 ([STOP], as SongGen's
tokenizer pads) with their mask. mixed_pro also gets ``vocal_labels``: the delayed vocal-stem codes aligned to the
mix labels' length (a song without a vocal stem has none: all -100, so it adds nothing to the vocal loss). With
the voice prompt on, ``mert_hidden`` ``[B, T, 25, H]`` and ``voice_mask`` ``[B, T]`` (``voice.py``: each song's
chosen crop, or zeros all masked for a dropped, silent or missing voice).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from audiotrain.data.padding import lengths_mask, pad_stack
from audiotrain_songgen import patterns as P
from audiotrain_songgen.loss import align_vocal


def labels_of(item: Mapping[str, Any], pattern: str) -> torch.Tensor:
    """One song's target token rows under ``pattern`` ([N, S]; N = 2K for parallel patterns)."""
    if pattern in P.SINGLE_TRACK:
        return P.delay(item["codes_mix"].long())
    missing = [name for name in ("codes_acc", "codes_vocal") if name not in item]
    if missing:
        raise ValueError(f"the {pattern} pattern trains on the accompaniment and vocal stems; this song has no "
                         f"{' or '.join(m.removeprefix('codes_') for m in missing)} stem")
    acc, vocal = item["codes_acc"].long(), item["codes_vocal"].long()
    frames = min(acc.shape[-1], vocal.shape[-1])  # stems of one song: the same length up to a frame
    return P.combine(P.delay(acc[:, :frames]), P.delay(vocal[:, :frames]), pattern)


def collate(items: Sequence[Mapping[str, Any]], pattern: str, vocal_labels: bool = False,
            voice: tuple[int, int, int] | None = None) -> dict[str, Any]:
    """The batch; ``voice`` (``(frames, states, width)`` of a voice, None with the voice prompt off) adds
    ``mert_hidden`` / ``voice_mask`` (``voice.collate_voice``)."""
    rows = [labels_of(it, pattern) for it in items]
    labels = pad_stack(rows, dim=-1, value=P.IGNORE_INDEX).long()
    batch: dict[str, Any] = {
        "labels": labels,
        "decoder_input_ids": P.shift_right(labels),
        "label_lengths": torch.tensor([r.shape[-1] for r in rows], dtype=torch.long),
    }
    text = [it["text_hidden"] for it in items]
    batch["text_hidden"] = pad_stack(text, dim=0)
    batch["text_mask"] = pad_stack([it["text_mask"].float() for it in items], dim=0)
    lyrics = [it["lyrics_ids"].long() for it in items]
    batch["lyrics_ids"] = pad_stack(lyrics, dim=0, value=0).long()
    batch["lyrics_mask"] = lengths_mask(torch.tensor([len(x) for x in lyrics]), batch["lyrics_ids"].shape[-1])
    if vocal_labels and pattern == "mixed_pro":
        width = labels.shape[-1]
        vocal = []
        for it, row in zip(items, rows):
            if "codes_vocal" in it:
                v = P.delay(it["codes_vocal"].long())
            else:
                v = torch.full_like(row, P.IGNORE_INDEX)
            vocal.append(align_vocal(align_vocal(v, row.shape[-1]), width))  # to the song's own labels, then padded
        batch["vocal_labels"] = torch.stack(vocal).long()
    if voice is not None:
        from audiotrain_songgen.voice import collate_voice

        batch.update(collate_voice(items, voice))
    return batch
