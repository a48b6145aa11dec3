"""LJSpeech-style transcript lists: ``train.txt`` lines ``path|text`` or ``path|text|speaker``, or LJSpeech's
``metadata.csv`` lines ``id|text|normalized`` with the audio in ``wavs/{id}.wav``.

Paths are relative to the list file; the normalized text is used when present; without a speaker column
the speaker is the list's folder name (one voice per folder, as ai-voice-cloning's ``training/<voice>/``
has it). Whitespace in the text is collapsed (whisper's lines start with a space).
A row's key is ``{speaker}/{audio path relative to the list, without extension}``. Every line that cannot
be used is reported as ``line N: reason`` (a line that is not UTF-8 or longer than 1 MB too: the others are still
read; a list with a BOM — UTF-16 as Windows Notepad saves it — is decoded by it); nothing is decoded here.

The plugin names the row fields the text and the speaker go to, plus any constant fields.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from audiotrain.data.audio_io import AUDIO_EXTENSIONS, file_problem, unsupported
from audiotrain.data.manifest import Manifest
from audiotrain.data.report import BadInputReport
from audiotrain.data.text_files import bom_encoding, list_lines
from audiotrain.errors import UserError
from audiotrain.plugins.base import DataReader

LIST_NAMES = ("train.txt", "metadata.csv")  # looked for in this order inside a folder


def _pipe_lines(path: Path) -> bool:
    """Whether the first non-empty line of a text file has a ``|`` (a transcript named train.txt has none)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
    except OSError:
        return False
    text = head.decode(bom_encoding(head) or "utf-8", errors="replace").lstrip("\ufeff")
    first = next((line for line in text.splitlines() if line.strip()), "")
    return "|" in first


def find_list_file(path: Path) -> Path | None:
    """The ``train.txt``/``metadata.csv`` a path names or contains (``|``-separated lines), else None."""
    if path.is_dir():
        return next((path / n for n in LIST_NAMES if (path / n).is_file() and _pipe_lines(path / n)), None)
    if path.is_file() and path.suffix.lower() in (".txt", ".csv", ".list") and _pipe_lines(path):
        return path
    return None


def _ljspeech_audio(base: Path, clip_id: str) -> Path | None:
    """LJSpeech audio for ``clip_id``: ``wavs/{id}.wav``, else the id as a path (with or without wavs/)."""
    for cand in (base / "wavs" / f"{clip_id}.wav", base / "wavs" / clip_id, base / clip_id):
        if cand.is_file():
            return cand
    return None


class TranscriptList(DataReader):
    """``train.txt`` (``path|text[|speaker]``) or LJSpeech ``metadata.csv`` (``id|text|normalized``)."""

    description = "transcript list (train.txt: path|text[|speaker], or LJSpeech metadata.csv + wavs/)"

    def __init__(self, *, text_field: str, speaker_field: str, extra: Mapping[str, Any] | None = None):
        self.text_field = text_field
        self.speaker_field = speaker_field
        self.extra = dict(extra or {})

    def matches(self, path: Path) -> bool:
        return find_list_file(path) is not None

    def read(self, path: Path, report: BadInputReport) -> Manifest:
        """One row per usable line; bad lines are reported as ``line N: reason``."""
        listfile = find_list_file(path)
        if listfile is None:
            raise UserError(f"data={path} holds no train.txt or metadata.csv with path|text lines.")
        listfile = listfile.resolve()
        rows: list[dict[str, Any]] = []
        seen: dict[str, int] = {}
        for n, line, problem in list_lines(listfile, "a path and its transcript"):
            if line is None:
                report.add(listfile, f"line {n}: {problem}")
                continue
            if not line.strip():
                continue
            row = self._row([f.strip() for f in line.split("|")], n, listfile, report)
            if row is None:
                continue
            if row["key"] in seen:
                report.add(listfile, f"line {n}: repeats the clip of line {seen[row['key']]}; using that one")
                continue
            seen[row["key"]] = n
            rows.append(row)
        return Manifest(rows, str(listfile), self.description)

    def _row(self, fields: list[str], n: int, listfile: Path, report: BadInputReport) -> dict[str, Any] | None:
        base = listfile.parent
        ljspeech = listfile.name.lower() == "metadata.csv"
        expected = "id|text|normalized" if ljspeech else "path|text or path|text|speaker"
        if len(fields) not in (2, 3) or not fields[0]:
            report.add(listfile, f"line {n}: expected {expected}, got {len(fields)} field(s)")
            return None
        speaker = base.name
        if ljspeech:
            text = fields[2] if len(fields) == 3 and fields[2] else fields[1]
            audio = _ljspeech_audio(base, fields[0])
            shown = f"wavs/{fields[0]}.wav"
        else:
            text = fields[1]
            if len(fields) == 3 and fields[2]:
                speaker = fields[2]
            audio = (base / fields[0]).expanduser()
            shown = fields[0]
        text = " ".join(text.split())
        if not text:
            report.add(listfile, f"line {n}: the transcript is empty")
            return None
        problem = "not found" if audio is None else file_problem(audio, shown)
        if problem is not None:
            if problem.endswith("not found"):
                problem = f"{shown} not found (paths are relative to {base})"
            report.add(listfile, f"line {n}: audio file {problem}")
            return None
        if audio.suffix.lower() not in AUDIO_EXTENSIONS:
            report.add(listfile, f"line {n}: {shown}: {unsupported(audio.suffix.lower())}")
            return None
        audio = audio.resolve()
        try:
            rel = audio.relative_to(base).with_suffix("").as_posix()
        except ValueError:
            rel = audio.with_suffix("").as_posix().lstrip("/")
        return {"key": f"{speaker}/{rel}", "audio_path": str(audio), self.text_field: text,
                self.speaker_field: speaker, **self.extra}
