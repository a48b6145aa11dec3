"""The files of a prepared voice folder (``training/<voice>/``, AIVC's layout), read back and written atomically:
``whisper.json`` / ``whisper.unsanitized.json`` (basename → whisper result), ``train.txt`` / ``validation.txt``
(``audio/<file>.wav|text``) and the 22,050 Hz PCM 16-bit wavs under ``audio/``.

What an earlier run left is data from disk: an unreadable ``whisper.json`` stops the run (it would be overwritten),
a malformed entry or list line is reported and not reused."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from audiotrain.atomic_write import atomic_path, atomic_write_text
from audiotrain.data.report import BadInputReport
from audiotrain.data.text_files import TextError, list_lines, read_text
from audiotrain.errors import UserError
from audiotrain_tortoise.segments import SAMPLE_RATE, entry_problem

WHISPER_JSON = "whisper.json"
UNSANITIZED_JSON = "whisper.unsanitized.json"
LISTS = ("train.txt", "validation.txt")
AUDIO_DIR = "audio"
#: what tortoise-prepare writes in its output folder (an existing folder holding none of them is someone else's)
OUTPUT_NAMES = (WHISPER_JSON, UNSANITIZED_JSON, *LISTS, AUDIO_DIR, "bad_inputs.txt", "bad_inputs.json")
#: whisper.json of a large dataset is far bigger than a transcript beside a clip may be
MAX_JSON_BYTES = 1 << 30


@dataclass
class Previous:
    """What an earlier run left in the output folder."""

    whisper: dict[str, dict[str, Any]] = field(default_factory=dict)
    unsanitized: dict[str, dict[str, Any]] = field(default_factory=dict)
    lines: dict[str, str] = field(default_factory=dict)  # "audio/x.wav" -> text, from train.txt and validation.txt
    #: the lines whose list was written after whisper.json was last changed: what a user edited since, if anything
    #: differs (a run writes whisper.json first; a whisper.json edited later is newer than the lists)
    edited: set[str] = field(default_factory=set)


def _read_results(path: Path, report: BadInputReport, required: bool) -> dict[str, dict[str, Any]]:
    """A whisper.json-like file as {basename: entry}; malformed entries reported and left out. ``required``: an
    unreadable file stops the run (one sentence) instead of being reported and started afresh."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(read_text(path, limit=MAX_JSON_BYTES))
        if not isinstance(data, dict):
            raise ValueError(f"it holds a {type(data).__name__}, not an object of basename: result")
    except (TextError, ValueError) as exc:
        if required:
            raise UserError(f"{path} from an earlier run cannot be read ({exc}): fix it, or delete it to transcribe "
                            f"every clip again.") from None
        report.add(path, f"cannot be read ({exc}); it is written afresh")
        return {}
    out = {}
    for name, entry in data.items():
        problem = entry_problem(entry)
        if problem:
            report.add(path, f"the entry for {name!r} is not used: {problem}")
        else:
            out[str(name)] = entry
    return out


def read_previous(out: Path, report: BadInputReport) -> Previous:
    prev = Previous(whisper=_read_results(out / WHISPER_JSON, report, required=True),
                    unsanitized=_read_results(out / UNSANITIZED_JSON, report, required=False))
    whisper_json = out / WHISPER_JSON
    changed = whisper_json.stat().st_mtime_ns if whisper_json.is_file() else -1
    for name in LISTS:
        listfile = out / name
        if not listfile.is_file():
            continue
        newer = listfile.stat().st_mtime_ns >= changed
        for n, line, problem in list_lines(listfile, "a path and its transcript"):
            if line is None:
                report.add(listfile, f"line {n}: {problem}; its text is not reused")
                continue
            if not line.strip():
                continue
            fields = line.split("|")
            if len(fields) != 2 or not fields[0].strip():
                report.add(listfile, f"line {n}: not path|text ({len(fields)} fields); its text is not reused")
                continue
            prev.lines[fields[0].strip()] = fields[1]
            if newer:
                prev.edited.add(fields[0].strip())
    return prev


def write_json(path: Path, results: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(results, indent=2, ensure_ascii=False) + "\n")


def write_list(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def write_wav(path: Path, audio: np.ndarray) -> None:
    """Mono float audio as a 22,050 Hz PCM 16-bit wav, atomically."""
    import soundfile as sf

    with atomic_path(path) as tmp:
        sf.write(str(tmp), np.clip(audio, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16", format="WAV")


def check_output(out: Path, voice_dir: Path) -> None:
    """The output folder is new, an earlier output of this command, or empty: never someone else's folder."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--output {out} is a file, not a folder: give a folder name.")
    if out.resolve() == voice_dir.resolve():
        raise UserError(f"--output {out} is the voice folder itself: give another folder (the default is "
                        f"training/{voice_dir.resolve().name}).")
    if out.is_dir():
        names = {p.name for p in out.iterdir()}
        if names and not names & set(OUTPUT_NAMES):
            raise UserError(f"--output {out} is a folder with other files in it (none of {', '.join(OUTPUT_NAMES[:4])}"
                            f"): give a new folder, or the folder of an earlier tortoise-prepare.")
