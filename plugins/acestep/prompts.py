"""Text prompt construction from tags + recaptions (ACE-Step dataset behaviour, spec §3 "Tags")."""
from __future__ import annotations

import random
from typing import Any, Mapping, Sequence

MAX_PROMPT_CHARS = 256


def prompt_from_tags(tags: Sequence[str] | str | None, recaption: Mapping[str, Any] | None,
                     rng: random.Random) -> str:
    """Build the UMT5 prompt of one example.

    - ``tags``: list of tag strings (a single string is split on ``", "`` as convert2hf does); blank tags are
      dropped (deviation: the original kept ``""`` from an empty prompt file); none left → ``["music"]``.
    - The tags are shuffled with ``rng`` and joined with ``", "``.
    - Candidates = every non-empty string value of ``recaption`` (insertion order) + the joined tags; one is
      picked with ``rng.choice``.
    - Truncated to 256 characters.
    Deterministic for a given ``rng`` state; ``tags`` and ``recaption`` are not modified."""
    if isinstance(tags, str):
        tags = tags.split(", ")
    tag_list = [t.strip() for t in (tags or []) if isinstance(t, str) and t.strip()]
    if not tag_list:
        tag_list = ["music"]
    rng.shuffle(tag_list)
    joined = ", ".join(tag_list)
    candidates = [v for v in (recaption or {}).values() if isinstance(v, str) and v.strip()]
    candidates.append(joined)
    return rng.choice(candidates)[:MAX_PROMPT_CHARS]


def prompt_variants(tags: Sequence[str] | str | None, recaption: Mapping[str, Any] | None, key: str,
                    count: int) -> list[str]:
    """``count`` prompts of one song, as ACE-Step draws one each time it loads the song (tags reshuffled, a
    recaption or the tags picked): variant 0 is seeded by the song's key alone (the one prompt of
    ``model.prompt_variants=1``), variant i by ``key#i``. Deterministic, so the feature cache can hold them all."""
    return [prompt_from_tags(tags, recaption, random.Random(str(key) if i == 0 else f"{key}#{i}"))
            for i in range(max(1, int(count)))]


def choose(features: Mapping[str, Any], rng: random.Random | None) -> dict[str, Any]:
    """One prompt's text features from the K cached (``text_hidden`` (K, L, d), ``text_mask`` (K, L), each
    variant right-padded): drawn with ``rng``, or variant 0 without one; trimmed to its own length, so the batch
    is the one a single cached prompt gives. Features of one prompt (``text_hidden`` (L, d)) pass unchanged."""
    out = dict(features)
    hidden = out.get("text_hidden")
    if hidden is None or hidden.dim() != 3:
        return out
    j = rng.randrange(hidden.shape[0]) if rng is not None else 0
    length = int(out["text_mask"][j].sum())
    out["text_hidden"] = hidden[j, :length]
    out["text_mask"] = out["text_mask"][j, :length]
    return out
