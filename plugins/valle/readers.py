"""VALL-E data formats: a folder of voice clips with transcripts, and LJSpeech-style ``path|text`` lists.

Voice folder: ``voices/{speaker}/clip.wav`` (or .flac/.mp3/.ogg) beside ``clip.txt`` holding the transcript.
The speaker is the clip's folder relative to the root (``alice``; ``group/alice`` when nested); clips
directly in the root belong to a speaker named after the root. This is how VALL-E users lay out
``./voices/{group}/{speaker}/`` before transcribing, with the transcripts written out beside the audio.

List file: ``train.txt`` lines ``path|text`` or ``path|text|speaker`` (paths relative to the file), or
LJSpeech's ``metadata.csv`` lines ``id|text|normalized`` with the audio in ``wavs/{id}.wav``
(the normalized text is used when present). Without a speaker column the speaker is the folder's name.

Nothing is decoded here: the core decodes each clip once and skips corrupt or silent ones itself.
Every clip, transcript or line that cannot be used goes into the report with its reason.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from audiotrain.data.audio_io import AUDIO_EXTENSIONS
from audiotrain.data.manifest import Manifest
from audiotrain.data.report import BadInputReport
from audiotrain.data.text_files import read_sidecar
from audiotrain.errors import UserError
from audiotrain.plugins.base import DataReader

TRANSCRIPT_SUFFIX = ".txt"
LIST_NAMES = ("train.txt", "metadata.csv")  # looked for in this order inside a folder
EXTS = "/".join(AUDIO_EXTENSIONS)


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def _pipe_lines(path: Path) -> bool:
    """Whether the first non-empty line of a text file has a ``|`` (a transcript named train.txt has none)."""
    try:
        with open(path, encoding="utf-8-sig") as fh:
            first = next((line for line in fh if line.strip()), "")
    except (OSError, UnicodeDecodeError):
        return False
    return "|" in first


def find_list_file(path: Path) -> Path | None:
    """The ``train.txt``/``metadata.csv`` a path names or contains (``|``-separated lines), else None."""
    if path.is_dir():
        return next((path / n for n in LIST_NAMES if (path / n).is_file() and _pipe_lines(path / n)), None)
    if path.is_file() and path.suffix.lower() in (".txt", ".csv", ".list") and _pipe_lines(path):
        return path
    return None


class VoiceFolder(DataReader):
    """Voice clips with same-name ``.txt`` transcripts; one sub-folder per speaker."""

    description = "voice folder ({speaker}/clip.wav + clip.txt transcript)"

    def __init__(self, language: str = "en-us"):
        self.language = language

    def matches(self, path: Path) -> bool:
        if not path.is_dir() or find_list_file(path) is not None:
            return False
        return any(p.suffix.lower() in AUDIO_EXTENSIONS + (TRANSCRIPT_SUFFIX,) for p in path.rglob("*"))

    def read(self, path: Path, report: BadInputReport) -> Manifest:
        """Rows ``{key: speaker/stem, audio_path, text, speaker, language}``, sorted by key."""
        root = path.resolve()
        files = sorted(p for p in root.rglob("*") if p.is_file() and _visible(p, root))
        clips: dict[Path, Path] = {}  # clip path without extension → audio file
        for p in files:
            if p.suffix.lower() not in AUDIO_EXTENSIONS:
                continue
            stem = p.with_suffix("")
            if stem in clips:
                report.add(p, f"same name as {clips[stem].name} (another format); using that one")
                continue
            clips[stem] = p
        rows: list[dict[str, Any]] = []
        for stem, audio in clips.items():
            transcript = stem.parent / f"{stem.name}{TRANSCRIPT_SUFFIX}"
            if not transcript.is_file():
                report.add(audio, f"no transcript: write what is said in {transcript.name} beside it")
                continue
            text = read_sidecar(transcript, report, what="transcript ", collapse=True)
            if text is None:
                continue
            if not text:
                report.add(transcript, "transcript is empty: write what is said in the clip")
                continue
            folder = audio.parent.relative_to(root).as_posix()
            speaker = root.name if folder == "." else folder
            rows.append({"key": f"{speaker}/{audio.stem}", "audio_path": str(audio), "text": text,
                         "speaker": speaker, "language": self.language})
        for p in files:
            if p.suffix.lower() == TRANSCRIPT_SUFFIX and p.with_suffix("") not in clips:
                report.add(p, f"transcript without a clip: no {p.stem} audio ({EXTS}) beside it")
        rows.sort(key=lambda r: r["key"])
        return Manifest(rows, str(root), self.description)


class LJSpeechList(DataReader):
    """``train.txt`` (``path|text[|speaker]``) or LJSpeech ``metadata.csv`` (``id|text|normalized``)."""

    description = "transcript list (train.txt: path|text[|speaker], or LJSpeech metadata.csv + wavs/)"

    def __init__(self, language: str = "en-us"):
        self.language = language

    def matches(self, path: Path) -> bool:
        return find_list_file(path) is not None

    def read(self, path: Path, report: BadInputReport) -> Manifest:
        """One row per usable line; bad lines are reported as ``line N: reason``."""
        listfile = find_list_file(path)
        if listfile is None:
            raise UserError(f"data={path} holds no train.txt or metadata.csv with path|text lines.")
        listfile = listfile.resolve()
        base = listfile.parent
        ljspeech = listfile.name.lower() == "metadata.csv"
        try:
            lines = listfile.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{listfile} cannot be read as UTF-8 text ({type(exc).__name__}).") from None
        rows: list[dict[str, Any]] = []
        seen: dict[str, int] = {}
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            fields = [f.strip() for f in line.split("|")]
            row = self._row(fields, ljspeech, base, n, listfile, report)
            if row is None:
                continue
            if row["key"] in seen:
                report.add(listfile, f"line {n}: repeats the clip of line {seen[row['key']]}; using that one")
                continue
            seen[row["key"]] = n
            rows.append(row)
        return Manifest(rows, str(listfile), self.description)

    def _row(self, fields: list[str], ljspeech: bool, base: Path, n: int, listfile: Path,
             report: BadInputReport) -> dict[str, Any] | None:
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
        if audio is None or not audio.is_file():
            report.add(listfile, f"line {n}: audio file {shown} not found (paths are relative to {base})")
            return None
        if audio.suffix.lower() not in AUDIO_EXTENSIONS:
            report.add(listfile, f"line {n}: {shown} is not a {EXTS} file")
            return None
        audio = audio.resolve()
        try:
            rel = audio.relative_to(base).with_suffix("").as_posix()
        except ValueError:
            rel = audio.with_suffix("").as_posix().lstrip("/")
        return {"key": f"{speaker}/{rel}", "audio_path": str(audio), "text": text,
                "speaker": speaker, "language": self.language}


def _ljspeech_audio(base: Path, clip_id: str) -> Path | None:
    """LJSpeech audio for ``clip_id``: ``wavs/{id}.wav``, else the id as a path (with or without wavs/)."""
    for cand in (base / "wavs" / f"{clip_id}.wav", base / "wavs" / clip_id, base / clip_id):
        if cand.is_file():
            return cand
    return None
