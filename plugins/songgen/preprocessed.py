"""SongGen's preprocessed dataset (what its ``preprocess_data.py`` saves with ``save_to_disk``), read as it is.

The folder is a ``DatasetDict`` (``dataset_dict.json`` + ``train/`` [+ ``eval/``]; the ``train`` split is read)
or one ``Dataset``. Its columns and what audiotrain makes of them (spec songgen.md §2):

- ``labels`` ``[8, T+8]``: the song's X-Codec codes with the delay pattern applied (row k = BOS×k, codes, EOS×(8-k)),
  the leading all-BOS column dropped. Undelayed exactly, they are the mix's codes: the ``codes_mix`` feature,
  given as it is (``audiotrain.data.given``: X-Codec never runs on these rows).
- ``ref_audio_ids_{vocal,acc}`` ``[8, T+9]``: the stems' codes in the same pattern with the track's own BOS/EOS
  ids and the start column kept; all zeros when the song had no such stem. They become ``codes_vocal`` /
  ``codes_acc`` (the dual-track targets, mixed_pro's vocal loss). ``ref_audio_ids_drum`` is not used.
- ``input_ids``: the caption's flan-t5 token ids. The T5 encoder runs on them (the caption text is not stored).
- ``prompt_input_ids``: the lyrics' VoiceBpe ids ``[261] + … + [0]``, used as they are (the ``lyrics`` feature).
- ``mert_input``: the path of the vocal stem the reference voice is cut from ("random" when none); the row's
  vocal file when it is found (absolute, or relative to the working directory or DATA), else a note.
- ``target_length``: samples at 16 kHz (the song's duration), ``id`` / ``fname``: the song's key,
  ``*_energy``: kept as row fields.

A row whose columns are missing, of the wrong shape or out of range is reported (``row N (key): …``), never
trained on; a folder without the columns is one error naming them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from audiotrain.data.manifest import Manifest
from audiotrain.data.report import BadInputReport
from audiotrain.plugins.base import DataReader
from audiotrain_songgen import patterns as P

SAMPLE_RATE = 16000
#: what a row must hold
REQUIRED = ("labels", "input_ids", "prompt_input_ids")
STEM_COLUMNS = {"vocal": "ref_audio_ids_vocal", "acc": "ref_audio_ids_acc"}


def dataset_folder(path: Path) -> Path | None:
    """The ``Dataset`` folder to read: ``path`` itself, or its ``train`` split for a ``DatasetDict``."""
    if not path.is_dir():
        return None
    if (path / "dataset_dict.json").is_file():
        try:
            splits = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8")).get("splits") or []
        except (OSError, ValueError):
            return None
        split = "train" if "train" in splits else (splits[0] if splits else None)
        return path / split if split and (path / split / "state.json").is_file() else None
    if (path / "dataset_info.json").is_file() and (path / "state.json").is_file():
        return path
    return None


def _columns(folder: Path) -> set[str]:
    try:
        info = json.loads((folder / "dataset_info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    return set((info.get("features") or {}).keys())


class SongGenDataset(DataReader):
    description = "SongGen preprocessed dataset (save_to_disk: labels, input_ids, prompt_input_ids, mert_input)"

    def matches(self, path: Path) -> bool:
        folder = dataset_folder(path)
        return folder is not None and {"labels", "prompt_input_ids"} <= _columns(folder)

    def read(self, path: Path, report: BadInputReport) -> Manifest:
        from datasets import load_from_disk

        from audiotrain.data.prepare import DataError

        folder = dataset_folder(path)
        ds = load_from_disk(str(folder))
        missing = [c for c in REQUIRED if c not in ds.column_names]
        if missing:
            raise DataError(f"data={path} lacks the columns {', '.join(missing)} of SongGen's preprocess_data.py: "
                            f"write it with `audiotrain songgen-preprocess`, or give the songs' folder / metadata "
                            f".jsonl instead.")
        ds = ds.with_format("numpy")
        rows: list[dict[str, Any]] = []
        seen: dict[str, int] = {}
        for i in range(len(ds)):
            r = ds[i]
            key = str(r.get("id") or r.get("fname") or f"row{i}")
            where = f"row {i} ({key})"
            if key in seen:
                report.add(str(folder), f"{where}: repeats the id of row {seen[key]}; using that row")
                continue
            try:
                row = _row(r, key, path, folder, where, report)
            except ValueError as exc:
                report.add(str(folder), f"{where}: {exc}")
                continue
            seen[key] = i
            rows.append(row)
        return Manifest(rows, str(folder), self.description)


def _codes(value: Any, column: str) -> torch.Tensor:
    t = torch.as_tensor(value)
    if t.dim() != 2 or t.shape[0] != 8:
        raise ValueError(f"{column} has the shape {tuple(t.shape)}, not [8, frames + delay]: was the dataset written "
                         f"by SongGen's preprocess_data.py (8 codebooks)?")
    return t.long()


def _valid(codes: torch.Tensor, column: str) -> torch.Tensor:
    if codes.shape[-1] < 1:
        raise ValueError(f"{column} holds no frame")
    if int(codes.min()) < 0 or int(codes.max()) >= P.CODEBOOK_SIZE:
        raise ValueError(f"{column} holds ids outside [0, {P.CODEBOOK_SIZE}) where codes belong: the delay pattern "
                         f"does not match (was it stored for another pattern?)")
    return codes


def _voice_file(value: str, root: Path) -> Path | None:
    """``mert_input`` as a file: absolute, or relative to the working directory or the dataset's folder."""
    p = Path(value).expanduser()
    for cand in [p] if p.is_absolute() else [Path.cwd() / p, root / p]:
        if cand.is_file():
            return cand.resolve()
    return None


def _row(r: dict[str, Any], key: str, root: Path, folder: Path, where: str, report: BadInputReport) -> dict[str, Any]:
    labels = _codes(r["labels"], "labels")
    codes = _valid(P.undelay(labels), "labels")
    given: dict[str, dict[str, torch.Tensor]] = {"codes_mix": {"codes_mix": codes}}
    for role, column in STEM_COLUMNS.items():
        if column not in r or r[column] is None:
            continue
        ids = _codes(r[column], column)
        if not bool(ids.any()):  # the song had no such stem
            continue
        try:
            stem = _valid(P.undelay(P.remap_track(ids, role)), column)
        except ValueError as exc:
            raise ValueError(str(exc).rstrip(".")) from None
        given[f"codes_{role}"] = {f"codes_{role}": stem}
    lyrics = torch.as_tensor(r["prompt_input_ids"]).long().reshape(-1)
    if lyrics.numel() < 2 or int(lyrics[0]) != 261 or int(lyrics[-1]) != 0:
        raise ValueError("prompt_input_ids is not [261] + lyrics + [0] (VoiceBpe's [START] … [STOP])")
    given["lyrics"] = {"lyrics_ids": lyrics}
    t5 = [int(x) for x in torch.as_tensor(r["input_ids"]).reshape(-1).tolist()]
    if not t5:
        raise ValueError("input_ids (the caption's T5 ids) is empty")
    length = r.get("target_length")
    seconds = float(length) / SAMPLE_RATE if length is not None else codes.shape[-1] / 50.0
    row: dict[str, Any] = {"key": key, "audio": {}, "caption": "", "lyrics": "", "t5_ids": t5,
                           "duration": seconds, "given": given}
    voice = r.get("mert_input")
    if isinstance(voice, str) and voice and voice != "random":
        p = _voice_file(voice, root)
        if p is None:
            report.note(str(folder), f"{where}: mert_input {voice} not found (relative paths are tried from the "
                                     f"working directory and {root}): the song has no vocal file here")
        else:
            row["audio"]["vocal"] = str(p)
    for name, value in r.items():
        if name.endswith("_energy") and value is not None:
            try:
                row[name] = float(value)
            except (TypeError, ValueError):
                pass
    return row
