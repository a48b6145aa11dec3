"""SongGen data formats: a folder of songs, and SongGen's metadata ``.jsonl``.

Folder (sub-folders too): ``X.wav|mp3|flac|ogg`` (the mix), ``X_prompt.txt`` (the description: required, not
empty), ``X_lyrics.txt`` (optional: a song without it is trained with empty lyrics, and the report says so), and
optional stems ``X_vocal.*`` / ``X_acc.*`` (the vocal and accompaniment tracks of the same song: streams of X,
never songs of their own).

Metadata ``.jsonl`` (SongGen's format; ``data=`` the file, or a folder holding ``metadata_abspath.jsonl`` /
``metadata.jsonl``): one JSON object a line with ``fname`` (or ``id``), ``caption``, ``lyrics``, the audio as
``audio_abspath`` or ``audio_file_name`` and the stems as ``vocal_*`` / ``acc_*`` likewise, and optionally
``vocal_energy``, ``acc_energy``, ``language``, ``duration``. Relative paths resolve against the file's folder.

Every song that cannot be used is reported with its reason (``line N: ...`` for the jsonl); a caption of
600 characters or more is skipped (SongGen's ``max_text_length``). Nothing is decoded here: the core decodes
each stream and skips corrupt, silent, too short or too long songs itself.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from audiotrain.data.audio_io import AUDIO_EXTENSIONS, file_problem, unsupported
from audiotrain.data.manifest import Manifest
from audiotrain.data.readers.sidecar_folder import Clip, Companion, Sidecar, SidecarFolder
from audiotrain.data.report import BadInputReport
from audiotrain.data.text_files import list_lines
from audiotrain.plugins.base import DataReader

#: SongGen's max_text_length: captions of this many characters or more are filtered out
MAX_CAPTION_CHARS = 600
#: the stems a song may have, by stream role, as the folder names them and as the jsonl prefixes them
STEMS = {"vocal": "_vocal", "acc": "_acc"}
METADATA_NAMES = ("metadata_abspath.jsonl", "metadata.jsonl")


def caption_problem(caption: str) -> str | None:
    if len(caption) >= MAX_CAPTION_CHARS:
        return (f"the description is {len(caption)} characters long; SongGen trains on descriptions under "
                f"{MAX_CAPTION_CHARS}: shorten it")
    return None


def song_row(key: str, mix: Path, stems: dict[str, Path], caption: str, lyrics: str, **extra: Any) -> dict[str, Any]:
    """The manifest row of one song: its streams by role (``mix`` and any stems) and its text fields."""
    audio = {"mix": str(mix.resolve()), **{role: str(p.resolve()) for role, p in stems.items()}}
    return {"key": key, "audio": audio, "caption": caption.strip(), "lyrics": lyrics.strip(), **extra}


class SongFolder(SidecarFolder):
    description = "song folder (X.wav + X_prompt.txt [+ X_lyrics.txt, X_vocal.wav, X_acc.wav])"
    sidecars = (Sidecar("caption", "_prompt.txt", "description",
                        "write the song's description (genre, mood, instruments, voice) into it", non_empty=True),
                Sidecar("lyrics", "_lyrics.txt", "lyrics", required=False,
                        missing_note="trained with empty lyrics (an instrumental)"))
    companions = tuple(Companion(role, suffix, f"{role} stem") for role, suffix in STEMS.items())

    def matches(self, path: Path) -> bool:
        return find_metadata(path) is None and super().matches(path)

    def read(self, path: Path, report: BadInputReport) -> Manifest:
        manifest = super().read(path, report)
        kept = []
        for row in manifest.rows:
            problem = caption_problem(row["caption"])
            if problem:
                report.add(row["audio"]["mix"], problem)
            else:
                kept.append(row)
        return Manifest(kept, manifest.source, manifest.format)

    def row(self, clip: Clip, root: Path) -> dict[str, Any]:
        return song_row(clip.key, clip.audio, clip.streams, clip.texts["caption"], clip.texts["lyrics"])


def find_metadata(path: Path) -> Path | None:
    """The metadata ``.jsonl`` ``data=path`` names: the file itself, or one of :data:`METADATA_NAMES` in it."""
    if path.is_file():
        return path if path.suffix.lower() == ".jsonl" else None
    if path.is_dir():
        return next((path / n for n in METADATA_NAMES if (path / n).is_file()), None)
    return None


class SongMetadata(DataReader):
    description = "SongGen metadata .jsonl (fname, caption, lyrics, audio/vocal/acc paths)"

    def matches(self, path: Path) -> bool:
        return find_metadata(path) is not None

    def read(self, path: Path, report: BadInputReport) -> Manifest:
        listfile = find_metadata(path).resolve()
        rows: list[dict[str, Any]] = []
        seen: dict[str, int] = {}
        for n, line, problem in list_lines(listfile, "one song's JSON object"):
            if line is None:
                report.add(listfile, f"line {n}: {problem}")
                continue
            if not line.strip():
                continue
            row = self._row(line, n, listfile, report)
            if row is None:
                continue
            if row["key"] in seen:
                report.add(listfile, f"line {n}: repeats the song '{row['key']}' of line {seen[row['key']]}; "
                                     f"using that one")
                continue
            seen[row["key"]] = n
            rows.append(row)
        return Manifest(rows, str(listfile), self.description)

    def _row(self, line: str, n: int, listfile: Path, report: BadInputReport) -> dict[str, Any] | None:
        where = f"line {n}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            report.add(listfile, f"{where}: not a JSON object ({exc.msg} at column {exc.colno}): write one object "
                                 f"a line")
            return None
        if not isinstance(item, dict):
            report.add(listfile, f"{where}: a JSON {type(item).__name__}, not an object: write one object a line")
            return None
        caption = item.get("caption")
        if not isinstance(caption, str) or not caption.strip():
            report.add(listfile, f"{where}: no caption (the song's description): add a \"caption\" text")
            return None
        problem = caption_problem(caption.strip())
        if problem:
            report.add(listfile, f"{where}: {problem}")
            return None
        lyrics = item.get("lyrics") or ""
        if not isinstance(lyrics, str):
            report.add(listfile, f"{where}: \"lyrics\" is a {type(lyrics).__name__}, not a text: write the lyrics "
                                 f"as one string (lines joined with \\n)")
            return None
        files: dict[str, Path] = {}
        for role in ("audio", *STEMS):
            value = item.get(f"{role}_abspath") or item.get(f"{role}_file_name")
            if not value:
                if role == "audio":
                    report.add(listfile, f"{where}: no audio (audio_abspath or audio_file_name): name the song's "
                                         f"audio file")
                    return None
                continue
            p = Path(str(value)).expanduser()
            p = p if p.is_absolute() else listfile.parent / p
            problem = file_problem(p, str(value))
            if problem is None and p.suffix.lower() not in AUDIO_EXTENSIONS:
                problem = f"{value}: {unsupported(p.suffix.lower())}"
            if problem is not None:
                if problem.endswith("not found"):
                    problem += f" (relative paths are relative to {listfile.parent})"
                report.add(listfile, f"{where}: {role} file {problem}")
                return None
            files[role] = p
        key = str(item.get("fname") or item.get("id") or files["audio"].with_suffix("").name)
        extra = {k: item[k] for k in ("language",) if isinstance(item.get(k), str)}
        extra.update({k: float(v) for k, v in item.items() if k.endswith("_energy") and isinstance(v, (int, float))})
        stems = {role: files[role] for role in STEMS if role in files}
        return song_row(key, files["audio"], stems, caption, lyrics, **extra)
