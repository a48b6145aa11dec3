"""ACE-Step data formats: the raw song folder of the training guide, and its HF dataset on disk.

Raw folder (sub-folders too): ``X.mp3`` (or .wav/.flac/.ogg), ``X_prompt.txt`` (comma-separated tags), ``X_lyrics.txt``
(optional: the original silently dropped songs without it; we keep them with empty lyrics and say so).
HF dataset: ``datasets.Dataset.save_to_disk`` output with the converter's features (keys, filename,
tags, norm_lyrics, speaker_emb_path, recaption). Relative filenames are tried against the working
directory, then the dataset folder and its parent (the training guide puts audio inside the dataset).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from audiotrain.data.audio_io import AUDIO_EXTENSIONS
from audiotrain.data.manifest import Manifest
from audiotrain.data.report import BadInputReport
from audiotrain.data.text_files import read_sidecar
from audiotrain.plugins.base import DataReader

PROMPT_SUFFIX = "_prompt.txt"
LYRICS_SUFFIX = "_lyrics.txt"


def split_tags(prompt: str) -> list[str]:
    """``"pop, male vocal,  120 bpm"`` → ``["pop", "male vocal", "120 bpm"]`` (empty pieces dropped)."""
    return [t.strip() for t in prompt.split(",") if t.strip()]


class RawSongFolder(DataReader):
    description = "raw song folder (X.mp3 + X_prompt.txt [+ X_lyrics.txt])"

    def matches(self, path: Path) -> bool:
        if not path.is_dir() or _is_hf_dataset(path):
            return False
        return any(p.name.endswith(PROMPT_SUFFIX) or p.suffix.lower() in AUDIO_EXTENSIONS for p in path.rglob("*"))

    def read(self, path: Path, report: BadInputReport) -> Manifest:
        """Songs anywhere below ``path``; a song's key is its path relative to ``path`` without extension."""
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        audio: dict[str, Path] = {}
        for p in files:
            if p.suffix.lower() in AUDIO_EXTENSIONS:
                key = p.relative_to(path).with_suffix("").as_posix()
                if key in audio:
                    report.add(p, f"duplicate of {audio[key].name} (same name, another format); using that one")
                    continue
                audio[key] = p
        rows: list[dict[str, Any]] = []
        for stem, apath in sorted(audio.items()):
            prompt_p = apath.with_name(f"{apath.stem}{PROMPT_SUFFIX}")
            lyrics_p = apath.with_name(f"{apath.stem}{LYRICS_SUFFIX}")
            if not prompt_p.is_file():
                report.add(apath, f"no {prompt_p.name}: write its tags (comma-separated) in that file")
                continue
            prompt = read_sidecar(prompt_p, report)
            if prompt is None:
                continue
            lyrics = ""
            if lyrics_p.is_file():
                lyrics = read_sidecar(lyrics_p, report)
                if lyrics is None:
                    continue
            else:
                report.note(apath, f"no {lyrics_p.name}, trained as instrumental (empty lyrics)")
            rows.append({"key": stem, "audio_path": str(apath.resolve()), "tags": split_tags(prompt),
                         "lyrics": lyrics, "speaker_emb_path": "", "recaption": {}})
        for p in files:
            for suffix in (PROMPT_SUFFIX, LYRICS_SUFFIX):
                stem = p.name[: -len(suffix)]
                if p.name.endswith(suffix) and (p.parent / stem).relative_to(path).as_posix() not in audio:
                    report.add(p, f"no audio file named {stem}.mp3/.wav/.flac/.ogg beside it")
        return Manifest(rows, str(path), self.description)


def _is_hf_dataset(path: Path) -> bool:
    return path.is_dir() and (path / "dataset_info.json").is_file() and (path / "state.json").is_file()


def resolve_audio(filename: str, dataset_dir: Path) -> Path | None:
    p = Path(filename).expanduser()
    if p.is_absolute():
        return p if p.is_file() else None
    for base in (Path(os.getcwd()), dataset_dir, dataset_dir.parent):
        if (base / p).is_file():
            return (base / p).resolve()
    return None


class HFSongDataset(DataReader):
    description = "HF dataset saved to disk (keys, filename, tags, norm_lyrics, speaker_emb_path, recaption)"
    REQUIRED = ("keys", "filename", "tags", "norm_lyrics")

    def matches(self, path: Path) -> bool:
        return _is_hf_dataset(path)

    def read(self, path: Path, report: BadInputReport) -> Manifest:
        from datasets import load_from_disk

        ds = load_from_disk(str(path))
        missing = [c for c in self.REQUIRED if c not in ds.column_names]
        if missing:
            from audiotrain.data.prepare import DataError

            raise DataError(f"data={path} lacks the columns {', '.join(missing)}: convert it with `audiotrain convert`.")
        rows: list[dict[str, Any]] = []
        for i, r in enumerate(ds):
            apath = resolve_audio(str(r["filename"]), path)
            if apath is None:
                report.add(r["filename"], f"row {i} ({r['keys']}): audio file not found (relative paths are tried "
                                          f"from the working directory and {path})")
                continue
            rec = r.get("recaption") or {}
            rows.append({"key": str(r["keys"]), "audio_path": str(apath), "tags": list(r["tags"] or []),
                         "lyrics": str(r["norm_lyrics"] or ""), "speaker_emb_path": str(r.get("speaker_emb_path") or ""),
                         "recaption": {k: v for k, v in dict(rec).items() if isinstance(v, str) and v.strip()}})
        return Manifest(rows, str(path), self.description)
