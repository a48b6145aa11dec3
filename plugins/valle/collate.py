"""Batch VALL-E examples: per-sample lists (no padding; the model builds its own sequences).

Each item holds ``phns`` (L,), ``codes`` (T, levels), and ``prompt``: the one conditioning clip the plugin
declares (``VALLEPlugin.conditioning_clips``), which the core has already cut — the first
``uniform(prompt_duration_range)`` seconds of another utterance of the same speaker, as upstream.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

LANG_IDS = {"en": 0, "ja": 1, "de": 2, "fr": 3, "zh": 4, "ko": 5}


def lang_id(language: str, num_langs: int) -> int:
    code = str(language or "en").split("-")[0].lower()
    i = LANG_IDS.get(code, 0)
    return i if i < num_langs else 0


def collate(items: Sequence[Mapping[str, Any]], lang: int) -> dict[str, Any]:
    return {
        "phns": [it["phns"].long() for it in items],
        "resps": [it["codes"].long() for it in items],
        "proms": [it["prompt"][0]["codes"].long() for it in items],
        "langs": torch.full((len(items),), int(lang), dtype=torch.long),
    }
