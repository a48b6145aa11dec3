"""Batch VALL-E examples: per-sample lists (no padding; the model builds its own sequences).

Each item holds ``phns`` (L,), ``codes`` (T, levels), and ``prompt``: the one conditioning clip the plugin
declares (``VALLEPlugin.conditioning_clips``), which the core has already cut — the first
``uniform(prompt_duration_range)`` seconds of another utterance of the same speaker, as upstream.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

LANG_IDS = {"en": 0, "ja": 1, "de": 2, "fr": 3, "zh": 4, "ko": 5}
ALIASES = {"cmn": "zh"}  # espeak-ng's Mandarin voice (cmn, cmn-latn-pinyin) is VALL-E's zh


def _code(language: str) -> str:
    code = str(language or "en").split("-")[0].lower()
    return ALIASES.get(code, code)


def lang_problem(language: str, num_langs: int) -> str | None:
    """Why ``model.language`` has no id in a model whose language table holds ``num_langs`` entries, or None."""
    code = _code(language)
    known = ", ".join(f"{c} ({i})" for c, i in LANG_IDS.items())
    if code not in LANG_IDS:
        return (f"model.language={language} is not one of VALL-E's languages ({known}): use one of them (an espeak-ng "
                f"voice of that language, e.g. en-us).")
    if LANG_IDS[code] >= num_langs:
        return (f"model.language={language} is language id {LANG_IDS[code]}, but the model's language table has "
                f"{num_langs} entr{'y' if num_langs == 1 else 'ies'} (langs={num_langs}), so it would be trained as "
                f"another language: use a model with langs >= {LANG_IDS[code] + 1}, or a language below id {num_langs}.")
    return None


def lang_id(language: str, num_langs: int) -> int:
    """The language id VALL-E embeds (en 0, ja 1, de 2, fr 3, zh 4, ko 5); never a silent fallback to English."""
    from audiotrain.errors import UserError

    problem = lang_problem(language, num_langs)
    if problem is not None:
        raise UserError(problem)
    return LANG_IDS[_code(language)]


def collate(items: Sequence[Mapping[str, Any]], lang: int) -> dict[str, Any]:
    return {
        "phns": [it["phns"].long() for it in items],
        "resps": [it["codes"].long() for it in items],
        "proms": [it["prompt"][0]["codes"].long() for it in items],
        "langs": torch.full((len(items),), int(lang), dtype=torch.long),
    }
