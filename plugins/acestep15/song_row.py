"""The manifest row every ACE-Step 1.5 reader produces, and the metadata values they parse.

A row (before the core moves ``audio_path`` under ``audio: {"main": path}``):

- ``key``: unique — the audio's path relative to the folder without extension (folders), the sample ``id``
  (dataset JSON), the v1 dataset's ``keys`` (HF dataset)
- ``audio_path``: absolute path of the song (48 kHz stereo, at most 240 s are used: ``dataset.max_duration``)
- ``id``: 8 lowercase hex characters, the ``<id>.pt`` name of the preprocessed file (the JSON's own id; else the
  first 8 hex digits of the SHA-1 of the key, so a folder gives the same ids on every run)
- ``caption``: the text the "# Caption" part of the prompt gets — the custom tag already applied and, for the
  samples the genre ratio picks, the genre instead of the caption (``prompt_source`` says which)
- ``prompt_source``: ``"caption"`` or ``"genre"``
- ``genre``: the sample's genre tags as given ("" if none)
- ``lyrics``: the lyrics text; ``"[Instrumental]"`` when there are none (what ACE-Step 1.5 encodes then)
- ``language``: a language code or ``"unknown"``
- ``bpm``: int or None; ``keyscale``, ``timesignature``: text, "" when unknown (the prompt shows "N/A")
- ``duration``: whole seconds as the dataset JSON gives it, else None (then the prompt's duration is the decoded
  audio's, which is what the model hears)
- ``is_instrumental``: bool
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

INSTRUMENTAL = "[Instrumental]"
UNKNOWN_LANGUAGE = "unknown"
#: languages that do not mark a song as sung (ACE-Step 1.5's scan)
NOT_SUNG = ("instrumental", UNKNOWN_LANGUAGE)


def stable_id(key: str) -> str:
    """8 hex characters derived from ``key``: the same song gets the same ``<id>.pt`` on every run."""
    return hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()[:8]


def parse_bpm(value: Any) -> tuple[int | None, str | None]:
    """``(bpm, None)`` from an int, a float or a numeric text (``"120"``, ``"96.5"`` → 96); ``(None, None)`` for
    nothing; ``(None, why)`` for a value that is no tempo."""
    if value is None or value == "":
        return None, None
    if isinstance(value, bool):
        return None, f"bpm {value!r} is not a number"
    try:
        number = float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        return None, f"bpm {value!r} is not a number"
    if not math.isfinite(number) or number <= 0:
        return None, f"bpm {value!r} is not a positive tempo"
    return int(number), None


def text_value(value: Any) -> str | None:
    """A metadata text (numbers as text, ``"4"`` for a time signature written 4); None when it is no text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return str(int(value)) if float(value).is_integer() else str(value)
    return value.strip() if isinstance(value, str) else None


def song_row(key: str, audio: Path, *, caption: str, lyrics: str = "", genre: str = "",
             prompt_source: str = "caption", bpm: int | None = None, keyscale: str = "", timesignature: str = "",
             language: str = "", duration: int | None = None, is_instrumental: bool | None = None,
             sample_id: str | None = None) -> dict[str, Any]:
    """One song's row (see the module docstring); ``is_instrumental`` None: no lyrics means instrumental."""
    lyrics = lyrics.strip()
    if is_instrumental is None:
        is_instrumental = not lyrics or lyrics == INSTRUMENTAL
    return {"key": key, "audio_path": str(audio.resolve()), "id": sample_id or stable_id(key),
            "caption": caption.strip(), "prompt_source": prompt_source, "genre": genre.strip(),
            "lyrics": lyrics or INSTRUMENTAL, "language": language.strip() or UNKNOWN_LANGUAGE, "bpm": bpm,
            "keyscale": keyscale, "timesignature": timesignature, "duration": duration,
            "is_instrumental": bool(is_instrumental)}
