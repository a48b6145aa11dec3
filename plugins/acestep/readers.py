"""ACE-Step data formats: the raw song folder of the training guide, and its HF dataset on disk.

Raw folder (sub-folders too): ``X.mp3`` (or .wav/.flac/.ogg), ``X_prompt.txt`` (comma-separated tags), ``X_lyrics.txt``
(optional: the original silently dropped songs without it; we keep them with empty lyrics and say so).
HF dataset: ``datasets.Dataset.save_to_disk`` output with the converter's features (keys, filename,
tags, norm_lyrics, speaker_emb_path, recaption); identical rows are repeats (the converter's ``--repeat_count``),
a key repeated with another file or text is reported. Relative filenames are tried against the working
directory, then the dataset folder and its parent (the training guide puts audio inside the dataset).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from audiotrain.data.audio_io import file_problem
from audiotrain.data.manifest import Manifest
from audiotrain.data.readers.sidecar_folder import Clip, Sidecar, SidecarFolder
from audiotrain.data.report import BadInputReport
from audiotrain.data.text_files import MAX_TEXT_BYTES, megabytes
from audiotrain.plugins.base import DataReader


def split_tags(prompt: str) -> list[str]:
    """``"pop, male vocal,  120 bpm"`` → ``["pop", "male vocal", "120 bpm"]`` (empty pieces dropped)."""
    return [t.strip() for t in prompt.split(",") if t.strip()]


class RawSongFolder(SidecarFolder):
    description = "raw song folder (X.mp3 + X_prompt.txt [+ X_lyrics.txt])"
    sidecars = (Sidecar("prompt", "_prompt.txt", "tags", "write the song's tags (comma-separated) into it"),
                Sidecar("lyrics", "_lyrics.txt", "lyrics", required=False,
                        missing_note="trained as instrumental (empty lyrics)"))

    def matches(self, path: Path) -> bool:
        return not _is_hf_dataset(path) and super().matches(path)

    def row(self, clip: Clip, root: Path) -> dict[str, Any]:
        """A song's key is its path relative to the folder without extension."""
        return {"key": clip.key, "audio_path": str(clip.audio.resolve()), "tags": split_tags(clip.texts["prompt"]),
                "lyrics": clip.texts["lyrics"], "speaker_emb_path": "", "recaption": {}}


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


def audio_problem(filename: str, dataset_dir: Path) -> str:
    """Why a row's ``filename`` gives no audio file: the first place it exists as something else (a folder, a link
    to nothing, a link loop), else not found where relative paths are tried."""
    p = Path(filename).expanduser()
    for cand in [p] if p.is_absolute() else [base / p for base in (Path(os.getcwd()), dataset_dir, dataset_dir.parent)]:
        if cand.exists() or cand.is_symlink():
            return f"audio file {file_problem(cand, filename) or filename + ' cannot be used'}"
    where = "" if p.is_absolute() else f" (relative paths are tried from the working directory and {dataset_dir})"
    return f"audio file {filename} not found{where}"


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
        seen: dict[str, tuple[int, dict]] = {}
        for i, r in enumerate(ds):
            key, filename = str(r["keys"]), str(r["filename"])
            if key in seen and seen[key][1] != r:  # an identical row is a repeat (convert --repeat_count): kept
                report.add(filename, f"row {i} ({key}): repeats the key of row {seen[key][0]} with another file or "
                                     "text; using that row")
                continue
            apath = resolve_audio(filename, path)
            if apath is None:
                report.add(filename, f"row {i} ({key}): {audio_problem(filename, path)}")
                continue
            size = len(str(r["norm_lyrics"] or "").encode("utf-8"))
            if size > MAX_TEXT_BYTES:
                report.add(filename, f"row {i} ({key}): the lyrics are {megabytes(size)} of text, more than the "
                                     f"{megabytes(MAX_TEXT_BYTES)} a song's lyrics may hold: is the column right?")
                continue
            seen.setdefault(key, (i, r))
            rec = r.get("recaption") or {}
            rows.append({"key": str(r["keys"]), "audio_path": str(apath), "tags": list(r["tags"] or []),
                         "lyrics": str(r["norm_lyrics"] or ""), "speaker_emb_path": str(r.get("speaker_emb_path") or ""),
                         "recaption": {k: v for k, v in dict(rec).items() if isinstance(v, str) and v.strip()}})
        return Manifest(rows, str(path), self.description)
