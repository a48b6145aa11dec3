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
