"""A folder of audio files, each with text files beside it named after it (``X.mp3`` + ``X<suffix>``).

A plugin subclasses :class:`SidecarFolder`, lists its :class:`Sidecar` files and turns each usable
:class:`Clip` into a manifest row (:meth:`SidecarFolder.row`). The base finds the audio anywhere below the
root (``audiotrain.data.walk``: not in hidden folders, environments, outputs, caches or run directories; cover art,
notes and READMEs passed over), groups files by stem, and reports, each with its reason:
two audio files with one stem (the first in sorted order is used), audio in a format that is not read (.m4a, ...),
a link that leads to no file, a clip whose required text file is
missing, unreadable or (where it must not be) empty, and a text file with no audio beside it.
A layout with several audio files per clip lists them as :class:`Companion` files (``X_vocal.wav`` beside
``X.wav``): each is a stream of the clip named without its suffix (``Clip.streams[role]``), never a clip of its
own; one without its clip's audio is reported.
Nothing is decoded here: the core decodes each clip once and skips corrupt or silent ones itself.
"""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from audiotrain.data.audio_io import AUDIO_EXTENSIONS, OTHER_AUDIO_EXTENSIONS, file_problem, unsupported
from audiotrain.data.manifest import Manifest
from audiotrain.data.report import BadInputReport
from audiotrain.data.text_files import read_sidecar
from audiotrain.data.walk import dataset_files, passed_note, walk_files
from audiotrain.plugins.base import DataReader

EXTS = "/".join(AUDIO_EXTENSIONS)


@dataclass(frozen=True)
class Sidecar:
    """One text file per clip: ``<stem><suffix>``, read into ``Clip.texts[field]``."""

    field: str
    suffix: str
    #: what the file holds, named in every message ("transcript", "tags")
    what: str
    #: what the user should do about a missing or empty file ("write what is said in the clip into it")
    hint: str = ""
    #: a missing required file skips the clip; a missing optional one gives "" and ``missing_note`` (None: no note,
    #: for a reader that looks elsewhere for the text and says itself what it found)
    required: bool = True
    missing_note: str | None = ""
    #: whitespace runs (newlines too) joined into single spaces
    collapse: bool = False
    #: an empty file skips the clip
    non_empty: bool = False


@dataclass(frozen=True)
class Companion:
    """Another audio file of the same clip: ``<stem><suffix>.<audio extension>`` (``song_vocal.wav``), the
    clip's ``role`` stream (``Clip.streams[role]``)."""

    role: str
    suffix: str
    #: what the file holds, named in messages ("vocal stem")
    what: str


@dataclass
class Clip:
    """One audio file with its text files read (and its companion audio files by role)."""

    key: str  # the audio's path relative to the root, without extension ("album/song")
    audio: Path
    folder: str  # the audio's folder relative to the root ("." for the root itself)
    texts: dict[str, str]
    streams: dict[str, Path] = field(default_factory=dict)


class SidecarFolder(DataReader):
    sidecars: Sequence[Sidecar] = ()
    companions: Sequence[Companion] = ()

    @abstractmethod
    def row(self, clip: Clip, root: Path) -> dict[str, Any]:
        """The manifest row of one usable clip (at least ``key`` and ``audio_path``)."""

    def matches(self, path: Path) -> bool:
        if not path.is_dir():
            return False
        suffixes = tuple(s.suffix for s in self.sidecars if s.required)
        return any(p.suffix.lower() in AUDIO_EXTENSIONS or p.name.endswith(suffixes) for p in walk_files(path))

    def read(self, path: Path, report: BadInputReport) -> Manifest:
        """Rows of every usable clip below ``path``, sorted by key."""
        root = path.resolve()
        passed: list[tuple[Path, str]] = []
        files = dataset_files(root, passed)
        note = passed_note(root, passed)
        if note is not None:
            report.note(root, note)
        audio: dict[str, Path] = {}
        for p in files:
            if p.suffix.lower() not in AUDIO_EXTENSIONS:
                continue
            key = p.relative_to(root).with_suffix("").as_posix()
            if key in audio:
                report.add(p, f"duplicate of {audio[key].name} (same name, another format); using that one")
                continue
            audio[key] = p
        streams = self._companions(audio, root, report)
        claimed = set(audio)  # stems whose text files belong to an audio file (read or reported)
        for p in files:
            if p.suffix.lower() in OTHER_AUDIO_EXTENSIONS:
                key = p.relative_to(root).with_suffix("").as_posix()
                used = f"; {audio[key].name} (same name) is used" if key in audio else ""
                report.add(p, unsupported(p.suffix.lower()) + used)
                claimed.add(key)
        rows = []
        for key, apath in sorted(audio.items()):
            problem = file_problem(apath)
            if problem is not None:  # a dangling link, a link loop, a pipe: reported here, its text files with it
                report.add(apath, f"audio file {problem}")
                continue
            texts = self._texts(apath, report)
            if texts is not None:
                folder = apath.parent.relative_to(root).as_posix()
                rows.append(self.row(Clip(key, apath, folder, texts, streams.get(key, {})), root))
        by_length = sorted(self.sidecars, key=lambda s: -len(s.suffix))
        for p in files:
            side = next((s for s in by_length if p.name.endswith(s.suffix)), None)
            stem = p.name[: -len(side.suffix)] if side else ""
            if side and (p.parent / stem).relative_to(root).as_posix() not in claimed:
                report.add(p, f"{side.what} file without audio: no audio file named {stem} ({EXTS}) beside it")
        rows.sort(key=lambda r: r["key"])
        return Manifest(rows, str(root), self.description)

    def _companions(self, audio: dict[str, Path], root: Path, report: BadInputReport) -> dict[str, dict[str, Path]]:
        """Take the companion files out of ``audio`` (in place): {clip key: {role: path}}; one whose clip has no
        audio file is reported and dropped."""
        found: dict[str, dict[str, Path]] = {}
        by_length = sorted(self.companions, key=lambda c: -len(c.suffix))
        for key in sorted(audio):
            side = next((c for c in by_length if key.endswith(c.suffix) and len(key) > len(c.suffix)), None)
            if side is None:
                continue
            base = key[: -len(side.suffix)]
            path = audio.pop(key)
            if base in audio:
                found.setdefault(base, {})[side.role] = path
            else:
                report.add(path, f"{side.what} without its song: no audio file named {Path(base).name} ({EXTS}) "
                                 f"beside it")
        return found

    def _texts(self, apath: Path, report: BadInputReport) -> dict[str, str] | None:
        """The clip's texts by field, or None after reporting why the clip cannot be used."""
        texts: dict[str, str] = {}
        for side in self.sidecars:
            p = apath.with_name(f"{apath.stem}{side.suffix}")
            if not (p.exists() or p.is_symlink()):
                if side.required:
                    report.add(apath, f"no {side.what} file {p.name}: {side.hint}")
                    return None
                if side.missing_note is not None:
                    report.note(apath, f"no {p.name}, {side.missing_note}")
                texts[side.field] = ""
                continue
            text = read_sidecar(p, report, what=f"{side.what} file ", collapse=side.collapse)
            if text is None:
                return None
            if side.non_empty and not text:
                report.add(p, f"{side.what} file is empty: {side.hint}")
                return None
            texts[side.field] = text
        return texts
