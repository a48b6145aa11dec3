"""The numbers and rules of ai-voice-cloning's dataset preparation (spec tortoise.md §2.1–2.3), as pure functions:
sanitising whisper's segments, cutting a segment's slice out of a clip, and which lines are kept and where they go.

Every rule that drops something returns the reason as a sentence fragment, for the bad-input report."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from audiotrain_tortoise.silence import trim_leading_silence

SAMPLE_RATE = 22050
#: a line's clip must be longer than this (AIVC's MIN_TRAINING_DURATION; DLAS drops wavs under 0.6 × sr)
MIN_SECONDS = 0.6
#: DLAS's max_wav_length: a line's clip must be shorter (255995 / 22050 = 11.6097505669 s)
MAX_SAMPLES = 255995
MAX_SECONDS = MAX_SAMPLES / SAMPLE_RATE
#: DLAS's max_text_length, in characters as AIVC counts them
MAX_TEXT = 200


def seconds(samples: int) -> float:
    return samples / SAMPLE_RATE


def sanitise(segments: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Whisper's segments with every one shorter than 0.6 s merged into the one before it (its text appended, the end
    extended to its end), or dropped when the one before already reaches past its end; ids renumbered from 0.
    A short first segment has nothing before it and stays as it is (the line rules cull it if it stays short)."""
    out: list[dict[str, Any]] = []
    for seg in segments:
        start, end, text = float(seg["start"]), float(seg["end"]), str(seg.get("text", ""))
        if end - start < MIN_SECONDS and out:
            prev = out[-1]
            if end > prev["end"]:
                prev["text"] += text
                prev["end"] = end
            continue
        out.append({"id": len(out), "start": start, "end": end, "text": text})
    return out


def whole_clip(text: str, duration: float, language: str) -> dict[str, Any]:
    """A whisper.json entry for a clip whose transcript is known: one segment covering the whole clip."""
    return {"text": text, "language": language,
            "segments": [{"id": 0, "start": 0.0, "end": round(duration, 6), "text": text}]}


def entry_problem(entry: Any) -> str | None:
    """Why a whisper.json entry (from a file on disk) cannot be used, or None."""
    if not isinstance(entry, dict) or not isinstance(entry.get("segments"), list):
        return "it is not {text, language, segments: [...]}"
    for seg in entry["segments"]:
        if not isinstance(seg, dict) or not isinstance(seg.get("text", ""), str):
            return "a segment is not {id, start, end, text}"
        try:
            start, end = float(seg["start"]), float(seg["end"])
        except (KeyError, TypeError, ValueError):
            return "a segment lacks numeric start and end times"
        if not (np.isfinite(start) and np.isfinite(end)):
            return "a segment's start or end is not a finite number"
    return None


@dataclass(frozen=True)
class Slice:
    """A segment's samples cut out of a clip, or why none could be (``problem``)."""

    audio: np.ndarray
    start: int  # sample index in the clip where the slice starts (after trimming silence)
    problem: str | None = None


def cut(clip: np.ndarray, segment: dict[str, Any], start_offset: float = 0.0, end_offset: float = 0.0,
        trim_silence: bool = False) -> Slice:
    """The samples of [start + start_offset, end + end_offset] s of ``clip`` (mono, 22050 Hz; times rounded to the
    nearest sample, where AIVC truncates: 2.7 s is sample 59535, not 59534), clamped to the clip;
    with ``trim_silence`` its leading silence removed. Rejected (``problem`` set) when it is empty — not one
    negative sample, as AIVC tests it: silence, or a span outside the clip — or shorter than 0.6 s."""
    n = clip.shape[-1]
    a = min(max(int(round((float(segment["start"]) + start_offset) * SAMPLE_RATE)), 0), n)
    b = min(max(int(round((float(segment["end"]) + end_offset) * SAMPLE_RATE)), 0), n)
    piece = clip[a:b] if b > a else clip[:0]
    span = piece.size
    if trim_silence and span:
        skip = trim_leading_silence(piece, SAMPLE_RATE)
        piece, a = piece[skip:], a + skip
    if not (piece < 0).any():
        what = ("outside the clip" if not span else "nothing but silence once its leading silence is trimmed"
                if not piece.size else "silence (not one negative sample)")
        return Slice(piece, a, f"empty: {what}")
    if piece.size < MIN_SECONDS * SAMPLE_RATE:
        return Slice(piece, a, f"{seconds(piece.size):.2f} s, shorter than the {MIN_SECONDS} s a slice needs")
    return Slice(piece, a)


def needs_segments(text: str, samples: int) -> bool:
    """Whether unsliced mode uses a clip's segments instead of the whole clip: text over 200 characters, or a clip
    of 11.6097505669 s (255995 samples) or longer."""
    return len(text) > MAX_TEXT or samples >= MAX_SAMPLES


def line_text(text: str) -> str:
    """Whisper's raw text as a line holds it: tabs and line breaks (which would break the line) become spaces."""
    return "".join(" " if (c.isspace() and c != " ") else c for c in text)


def cull_reason(text: str, samples: int) -> str | None:
    """Why a line (its text, its clip's length in samples at 22050 Hz) is not kept, or None."""
    if not text.strip():
        return "the transcript is empty"
    if "|" in text:
        return "the transcript holds a '|', which separates path and text in train.txt: remove it"
    if len(text) > MAX_TEXT:
        return f"the text is {len(text)} characters, more than the {MAX_TEXT} TorToiSe takes"
    if samples <= MIN_SECONDS * SAMPLE_RATE:
        return f"{seconds(samples):.2f} s, not longer than the {MIN_SECONDS} s a clip needs"
    if samples >= MAX_SAMPLES:
        return (f"{seconds(samples):.2f} s, not shorter than the {MAX_SECONDS:.2f} s TorToiSe takes "
                f"({MAX_SAMPLES} samples at {SAMPLE_RATE} Hz)")
    return None


def goes_to_validation(text: str, samples: int, text_threshold: float, audio_threshold: float) -> bool:
    """AIVC's split: a line is for validation when its text is shorter than ``text_threshold`` characters, or
    (``audio_threshold`` > 0) its clip is shorter than ``audio_threshold`` seconds."""
    return len(text) < text_threshold or (audio_threshold > 0 and seconds(samples) < audio_threshold)


def render(lines: Iterable[tuple[str, str]]) -> str:
    """``path|text`` lines joined with "\\n", no trailing newline (as AIVC writes train.txt and validation.txt)."""
    return "\n".join(f"{path}|{text}" for path, text in lines)
