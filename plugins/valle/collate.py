"""Batch VALL-E examples: per-sample lists (no padding; the model builds its own sequences).

Each item holds ``phns`` (L,), ``codes`` (T, levels), and — from the core's same-speaker companion —
``prompt`` (another utterance's features) with ``prompt_seed``. The acoustic prompt is the first
``uniform(prompt_duration_range)`` seconds of that utterance (trimmed from the start, as upstream).
"""
from __future__ import annotations

import random
from typing import Any, Mapping, Sequence

import torch

LANG_IDS = {"en": 0, "ja": 1, "de": 2, "fr": 3, "zh": 4, "ko": 5}


def lang_id(language: str, num_langs: int) -> int:
    code = str(language or "en").split("-")[0].lower()
    i = LANG_IDS.get(code, 0)
    return i if i < num_langs else 0


def prompt_codes(item: Mapping[str, Any], frame_rate: float, duration_range: Sequence[float]) -> torch.Tensor:
    rng = random.Random(int(item.get("prompt_seed", 0)))
    frames = max(1, int(rng.uniform(float(duration_range[0]), float(duration_range[1])) * frame_rate))
    source = item["prompt"]["codes"] if "prompt" in item else item["codes"]
    return source[:frames].long()


def collate(items: Sequence[Mapping[str, Any]], frame_rate: float, duration_range: Sequence[float],
            lang: int) -> dict[str, Any]:
    return {
        "phns": [it["phns"].long() for it in items],
        "resps": [it["codes"].long() for it in items],
        "proms": [prompt_codes(it, frame_rate, duration_range) for it in items],
        "langs": torch.full((len(items),), int(lang), dtype=torch.long),
    }
