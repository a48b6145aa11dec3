"""ACE-Step 1.5's CSV metadata: any ``*.csv`` in the song folder with a ``file`` column, and optional ``bpm``,
``key`` and ``caption`` columns (header names in any case; ``,``, ``;`` or tab separated; UTF-8, a BOM allowed).
ACE-Step 1.5 reads the CSVs at the top of the folder; a CSV in a sub-folder is read here too (not passed over).

A row's ``file`` names a song by its file name (as ACE-Step 1.5 matches it, anywhere below the folder) or by its path
relative to the CSV's folder. What cannot be used is reported, each as ``line N: reason`` on the CSV: a file name
no audio file has, a name several audio files share (write the relative path), a second row for one song. A CSV with
no ``file`` column, or that is not UTF-8 text, is reported whole. A bpm that is no number is noted and left out.
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

from audiotrain.data.report import BadInputReport
from audiotrain.data.text_files import TextError, read_text

from audiotrain_acestep15.song_row import parse_bpm

COLUMNS = ("file", "bpm", "key", "caption")
MAX_CSV_BYTES = 64 << 20


@dataclass
class CsvEntry:
    """What one CSV row says about one song."""

    source: Path
    line: int
    bpm: int | None = None
    keyscale: str = ""
    caption: str = ""


def _rows(path: Path, report: BadInputReport) -> list[tuple[int, dict[str, str]]] | None:
    """``(line number, {column: value})`` per data row, or None after reporting why the CSV cannot be used."""
    try:
        text = read_text(path, limit=MAX_CSV_BYTES).lstrip("\ufeff")
    except TextError as exc:
        report.add(path, f"metadata CSV {exc}")
        return None
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    try:
        header = next(reader, None)
        if header is None:
            report.add(path, "metadata CSV is empty: write a header line with a 'file' column, or delete it")
            return None
        names = {h.strip().lower(): i for i, h in enumerate(header)}
        if "file" not in names:
            report.add(path, f"metadata CSV has no 'file' column (its columns: {', '.join(header) or 'none'}): "
                             f"name the song files in a 'file' column, or move the CSV out of the folder")
            return None
        out = []
        for fields in reader:
            row = {c: fields[names[c]].strip() for c in COLUMNS if c in names and names[c] < len(fields)}
            if any(fields):
                out.append((reader.line_num, row))
        return out
    except csv.Error as exc:
        report.add(path, f"metadata CSV cannot be parsed (line {reader.line_num}: {exc}): fix its quoting")
        return None


def read_csv_metadata(csv_files: list[Path], audio: dict[str, Path], root: Path,
                      report: BadInputReport) -> dict[str, CsvEntry]:
    """``{audio key: CsvEntry}`` from every CSV; ``audio`` maps each song's key to its file."""
    by_name: dict[str, list[str]] = {}
    by_path = {os.path.normpath(p): key for key, p in audio.items()}  # links not followed (a loop is reported)
    for key, p in sorted(audio.items()):
        by_name.setdefault(p.name, []).append(key)
    found: dict[str, CsvEntry] = {}
    for path in csv_files:
        rows = _rows(path, report)
        for line, row in rows or ():
            name = row.get("file", "")
            where = f"line {line}"
            if not name:
                report.add(path, f"{where}: the 'file' column is empty: name the song's audio file")
                continue
            key = by_path.get(os.path.normpath(path.parent / name))
            if key is None:
                keys = by_name.get(Path(name).name, []) if "/" not in name and "\\" not in name else []
                if len(keys) > 1:
                    shown = ", ".join(audio[k].relative_to(root).as_posix() for k in keys[:3])
                    report.add(path, f"{where}: {name} names several audio files ({shown}): write its path relative "
                                     f"to {path.name}")
                    continue
                if not keys:
                    report.add(path, f"{where}: {name} names no audio file in the folder: check the name or delete "
                                     f"the line")
                    continue
                key = keys[0]
            if key in found:
                first = found[key]
                report.add(path, f"{where}: repeats the song {name} of {first.source.name} line {first.line}; using "
                                 f"that one")
                continue
            bpm, problem = parse_bpm(row.get("bpm"))
            if problem:
                report.note(audio[key], f"{path.name} {where}: {problem}; the prompt says N/A")
            found[key] = CsvEntry(path, line, bpm, row.get("key", ""), row.get("caption", ""))
    return found
