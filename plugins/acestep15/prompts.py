"""The text the Qwen3 text encoder reads for a song — ONE template and ONE padding rule for training and inference.

ACE-Step 1.5's own trainer formats and pads these one way and its inference another (spec §3 step 4 ⚠: raw lyrics
padded to 512 vs the "# Languages" template, pad-to-longest, capped at 2048). audiotrain uses the inference form
everywhere: :func:`song_prompts` builds both strings for a song, :func:`tokenize_texts` pads a batch of them, and
:func:`tokenize_songs` (used by the cache builder and by ``generate`` alike) does both.

- Caption prompt (upstream ``SFT_GEN_PROMPT`` with ``DEFAULT_DIT_INSTRUCTION``)::

      # Instruction\\n{instruction}\\n\\n# Caption\\n{caption}\\n\\n# Metas\\n- bpm: {bpm}\\n- timesignature: {ts}\\n
      - keyscale: {key}\\n- duration: {int seconds} seconds\\n<|endoftext|>\\n

  with ``N/A`` for a missing bpm / time signature / key.
- Lyrics prompt: ``# Languages\\n{language}\\n\\n# Lyric\\n{lyrics}<|endoftext|>`` (language ``unknown`` and lyrics
  ``[Instrumental]`` when missing, as ACE-Step 1.5's generation defaults).
- Padding: to the longest prompt of the batch, on the right, with a 0/1 mask (pads are never attended: the text
  encoder is causal, so valid tokens never see right pads, and the DiT side masks them). A prompt longer than the
  cap (256 caption tokens, 2048 lyric tokens, as at inference) is cut and flagged in ``TokenBatch.truncated`` so
  the caller reports it.

⚠ The spec does not quote ``DEFAULT_DIT_INSTRUCTION``; the default below is the text of upstream
``acestep/constants.py`` as several independent ports quote it verbatim (and diffusers' ACE-Step 1.5 pipeline
uses it as the text2music instruction). It is a parameter (``instruction=``) so a config can override it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from audiotrain.errors import UserError

__all__ = ["DEFAULT_DIT_INSTRUCTION", "DEFAULT_LANGUAGE", "INSTRUMENTAL_LYRICS", "TEXT_MAX_TOKENS",
           "LYRIC_MAX_TOKENS", "SongText", "TokenBatch", "format_metas", "caption_prompt", "lyrics_prompt",
           "song_prompts", "tokenize_texts", "tokenize_songs"]

#: ⚠ default, not in the spec: upstream ``acestep/constants.py`` ``DEFAULT_DIT_INSTRUCTION`` (text2music)
DEFAULT_DIT_INSTRUCTION = "Fill the audio semantic mask based on the given conditions:"
#: ACE-Step 1.5's default ``vocal_language`` at generation
DEFAULT_LANGUAGE = "unknown"
#: the lyrics of a song without any (ACE-Step 1.5's ``AudioSample.lyrics`` default)
INSTRUMENTAL_LYRICS = "[Instrumental]"
#: token caps at inference (spec §3 step 4 ⚠: ``prompt_utils.py`` / ``conditioning_text.py``)
TEXT_MAX_TOKENS = 256
LYRIC_MAX_TOKENS = 2048
_END = "<|endoftext|>"


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or (
        isinstance(value, float) and math.isnan(value))


def _bpm(value: Any) -> str:
    if _blank(value) or value == 0:
        return "N/A"
    if isinstance(value, str):
        return value.strip()
    number = float(value)
    return str(int(number)) if number.is_integer() else str(number)


def format_metas(*, bpm: Any = None, timesignature: Any = None, keyscale: Any = None, duration: float) -> str:
    """The ``# Metas`` block: bpm, timesignature, keyscale (``N/A`` when missing) and ``- duration: N seconds``
    (whole seconds, rounded down), each line ending in a newline."""
    if _blank(duration) or float(duration) < 0:
        raise UserError(f"a song's duration must be a number of seconds >= 0, got {duration!r}; pass the audio's "
                        f"length (training) or the length to generate (inference).")
    ts = "N/A" if _blank(timesignature) else str(timesignature).strip()
    key = "N/A" if _blank(keyscale) else str(keyscale).strip()
    return (f"- bpm: {_bpm(bpm)}\n- timesignature: {ts}\n- keyscale: {key}\n"
            f"- duration: {int(float(duration))} seconds\n")


def caption_prompt(caption: str, *, metas: str, instruction: str = DEFAULT_DIT_INSTRUCTION) -> str:
    """The caption prompt the text encoder's transformer reads (module doc)."""
    return f"# Instruction\n{instruction}\n\n# Caption\n{caption}\n\n# Metas\n{metas}{_END}\n"


def lyrics_prompt(lyrics: str | None, language: str | None = None) -> str:
    """The lyrics prompt whose token embeddings the lyric encoder reads (module doc)."""
    text = INSTRUMENTAL_LYRICS if _blank(lyrics) else str(lyrics)
    lang = DEFAULT_LANGUAGE if _blank(language) else str(language).strip()
    return f"# Languages\n{lang}\n\n# Lyric\n{text}{_END}"


@dataclass(frozen=True)
class SongText:
    """What the prompts say about one song: the same fields at training (from the dataset row) and at inference
    (from the user's request)."""

    caption: str
    duration: float
    lyrics: str | None = None
    language: str | None = None
    bpm: Any = None
    keyscale: str | None = None
    timesignature: Any = None

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any], *, duration: float | None = None) -> "SongText":
        """From a dataset row / request dict with ACE-Step 1.5's field names (caption, lyrics, language, bpm,
        keyscale, timesignature, duration); ``duration`` overrides the row's (e.g. the decoded audio's length)."""
        dur = row.get("duration") if duration is None else duration
        if _blank(dur):
            raise UserError(f"song {row.get('id') or row.get('caption') or '?'!r} has no duration; pass its length "
                            f"in seconds.")
        return cls(caption=str(row.get("caption") or ""), duration=float(dur), lyrics=row.get("lyrics"),
                   language=row.get("language"), bpm=row.get("bpm"), keyscale=row.get("keyscale"),
                   timesignature=row.get("timesignature"))


def song_prompts(song: SongText, *, instruction: str = DEFAULT_DIT_INSTRUCTION) -> tuple[str, str]:
    """``(caption prompt, lyrics prompt)`` of one song."""
    metas = format_metas(bpm=song.bpm, timesignature=song.timesignature, keyscale=song.keyscale,
                         duration=song.duration)
    return (caption_prompt(song.caption, metas=metas, instruction=instruction),
            lyrics_prompt(song.lyrics, song.language))


@dataclass
class TokenBatch:
    """Right-padded token ids ``[B, L]`` (int64), mask ``[B, L]`` (int64, 1 = token, 0 = pad; L = the longest
    prompt after the cap) and which prompts were cut at the cap."""

    ids: torch.Tensor
    mask: torch.Tensor
    truncated: list[bool]


def tokenize_texts(tokenizer: Any, texts: Sequence[str], max_length: int) -> TokenBatch:
    """The one padding rule: tokenise each text (the tokenizer's own special-token handling, as upstream calls it),
    cut at ``max_length`` (flagged), pad on the right to the longest with the tokenizer's pad id, mask 1/0."""
    if not texts:
        raise UserError("no prompts to tokenise; pass at least one song.")
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        raise UserError("the text tokenizer has no pad token; use the Qwen3-Embedding-0.6B folder's tokenizer "
                        "(its pad token is <|endoftext|>).")
    rows = [list(tokenizer(str(t))["input_ids"]) for t in texts]
    truncated = [len(r) > max_length for r in rows]
    rows = [r[:max_length] for r in rows]
    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return TokenBatch(ids=ids, mask=mask, truncated=truncated)


def tokenize_songs(tokenizer: Any, songs: Sequence[SongText], *, instruction: str = DEFAULT_DIT_INSTRUCTION,
                   text_max_length: int = TEXT_MAX_TOKENS,
                   lyric_max_length: int = LYRIC_MAX_TOKENS) -> tuple[TokenBatch, TokenBatch]:
    """``(caption tokens, lyric tokens)`` of a batch of songs — the single path of training and inference."""
    pairs = [song_prompts(s, instruction=instruction) for s in songs]
    return (tokenize_texts(tokenizer, [p[0] for p in pairs], text_max_length),
            tokenize_texts(tokenizer, [p[1] for p in pairs], lyric_max_length))
