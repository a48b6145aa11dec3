"""A ``datasets.Dataset`` saved to disk (``save_to_disk``: ``dataset_info.json`` + ``state.json`` + Arrow files) whose
rows each name one audio file by a path column.

A plugin subclasses :class:`HFAudioDataset`, names its key and file columns, the columns the dataset must have and
the text columns whose size is checked, and turns each usable record into a manifest row (:meth:`HFAudioDataset.row`).
The base reports, each as ``row N (key): reason``: a key repeated with another file or text (an identical row is a
repeat, as a converter's repeat count writes them, and is kept), an audio file that is missing or not a regular file,
a text column larger than a text file beside audio may be, and what the plugin's ``record_problem`` says. A dataset that lacks a required column is one error
naming the columns. Relative file names are tried against the working directory, then the dataset folder and its
parent (a dataset is often saved beside or above its audio). Nothing is decoded here.
"""
from __future__ import annotations

import os
from abc import abstractmethod
from pathlib import Path
from typing import Any, Mapping

from audiotrain.data.audio_io import file_problem
from audiotrain.data.manifest import Manifest
from audiotrain.data.report import BadInputReport
from audiotrain.data.text_files import MAX_TEXT_BYTES, megabytes
from audiotrain.plugins.base import DataReader


def is_hf_dataset(path: Path) -> bool:
    """Whether ``path`` is a folder ``datasets.Dataset.save_to_disk`` wrote."""
    return path.is_dir() and (path / "dataset_info.json").is_file() and (path / "state.json").is_file()


def _bases(dataset_dir: Path) -> tuple[Path, ...]:
    return Path(os.getcwd()), dataset_dir, dataset_dir.parent


def resolve_audio(filename: str, dataset_dir: Path) -> Path | None:
    """The audio file a row names: absolute as is, relative against the working directory, then ``dataset_dir``
    and its parent; None when it is in none of them."""
    p = Path(filename).expanduser()
    if p.is_absolute():
        return p if p.is_file() else None
    for base in _bases(dataset_dir):
        if (base / p).is_file():
            return (base / p).resolve()
    return None


def audio_problem(filename: str, dataset_dir: Path) -> str:
    """Why a row's ``filename`` gives no audio file: the first place it exists as something else (a folder, a link
    to nothing, a link loop), else not found where relative paths are tried."""
    p = Path(filename).expanduser()
    for cand in [p] if p.is_absolute() else [base / p for base in _bases(dataset_dir)]:
        if cand.exists() or cand.is_symlink():
            return f"audio file {file_problem(cand, filename) or filename + ' cannot be used'}"
    where = "" if p.is_absolute() else f" (relative paths are tried from the working directory and {dataset_dir})"
    return f"audio file {filename} not found{where}"


class HFAudioDataset(DataReader):
    """Rows of a saved ``datasets.Dataset``, one audio file a row."""

    #: the column that identifies a row (repeated keys are reported unless the whole row repeats)
    key_column: str = "key"
    #: the column that names the row's audio file
    file_column: str = "filename"
    #: columns the dataset must have (key and file columns included)
    required: tuple[str, ...] = ()
    #: text columns whose size is checked, each with what it holds in messages ({"norm_lyrics": "lyrics"})
    text_columns: Mapping[str, str] = {}
    #: what the user should do when a required column is missing
    missing_hint: str = "save the dataset with those columns"

    def record_problem(self, record: Mapping[str, Any]) -> str | None:
        """Why a record cannot be used although its audio file exists (a sentence fragment), else None."""
        return None

    @abstractmethod
    def row(self, record: Mapping[str, Any], audio: Path) -> dict[str, Any]:
        """The manifest row of one usable record (at least ``key`` and ``audio_path``)."""

    def matches(self, path: Path) -> bool:
        return is_hf_dataset(path)

    def read(self, path: Path, report: BadInputReport) -> Manifest:
        from datasets import load_from_disk

        ds = load_from_disk(str(path))
        missing = [c for c in self.required if c not in ds.column_names]
        if missing:
            from audiotrain.data.prepare import DataError

            raise DataError(f"data={path} lacks the columns {', '.join(missing)}: {self.missing_hint}.")
        rows: list[dict[str, Any]] = []
        seen: dict[str, tuple[int, dict]] = {}
        for i, r in enumerate(ds):
            key, filename = str(r[self.key_column]), str(r[self.file_column])
            if key in seen and seen[key][1] != r:  # an identical row is a repeat (a converter's repeat count): kept
                report.add(filename, f"row {i} ({key}): repeats the key of row {seen[key][0]} with another file or "
                                     "text; using that row")
                continue
            apath = resolve_audio(filename, path)
            if apath is None:
                report.add(filename, f"row {i} ({key}): {audio_problem(filename, path)}")
                continue
            problem = self._text_problem(r) or self.record_problem(r)
            if problem is not None:
                report.add(filename, f"row {i} ({key}): {problem}")
                continue
            seen.setdefault(key, (i, r))
            rows.append(self.row(r, apath))
        return Manifest(rows, str(path), self.description)

    def _text_problem(self, record: Mapping[str, Any]) -> str | None:
        for column, what in self.text_columns.items():
            size = len(str(record.get(column) or "").encode("utf-8"))
            if size > MAX_TEXT_BYTES:
                return (f"the {what} are {megabytes(size)} of text, more than the {megabytes(MAX_TEXT_BYTES)} a row's "
                        f"{what} may hold: is the column right?")
        return None
