"""ACE-Step 1.5's song folder, as its dataset builder scans it.

Audio anywhere below the folder (.wav/.mp3/.flac/.ogg/.opus), and beside each song ``X``:

- ``X.caption.txt``: the caption;
- ``X.lyrics.txt``: the lyrics, or ``X.txt`` when there is no (or an empty) ``X.lyrics.txt``;
- ``X.json`` (optional): ``{caption, genre, lyrics, bpm, keyscale, timesignature, language, is_instrumental,
  prompt_override}``, every field optional, each one given replacing what the text files said;
- any ``*.csv`` with a ``file`` column and optional ``bpm``, ``key``, ``caption`` columns
  (:mod:`audiotrain_acestep15.csv_metadata`), which replaces what the JSON said.

A song is labeled when it ends up with a caption; ACE-Step 1.5 trains on labeled songs only, so one without a caption
is reported (with where to write one). Reported too, each with its reason: a text file that is not UTF-8 or too large,
an ``X.json`` that is not a JSON object, a field of the wrong type, a CSV line naming no song, and an ``X.txt`` or
``X.json`` with no audio beside it. A bpm that is no number is noted and left out (the prompt says N/A). Lyrics make a
song sung (``is_instrumental`` false), as a language other than "unknown"/"instrumental" does, unless the JSON says.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from audiotrain.data.audio_io import AUDIO_EXTENSIONS, OTHER_AUDIO_EXTENSIONS
from audiotrain.data.manifest import Manifest
from audiotrain.data.readers.hf_audio_dataset import is_hf_dataset
from audiotrain.data.readers.sidecar_folder import EXTS, Clip, Sidecar, SidecarFolder
from audiotrain.data.report import BadInputReport
from audiotrain.data.text_files import TextError, read_sidecar, read_text
from audiotrain.data.walk import dataset_files

from audiotrain_acestep15.csv_metadata import CsvEntry, read_csv_metadata
from audiotrain_acestep15.song_row import INSTRUMENTAL, NOT_SUNG, parse_bpm, song_row, text_value

CAPTION, LYRICS, FALLBACK, META = ".caption.txt", ".lyrics.txt", ".txt", ".json"
CAPTION_HINT = "write one into {stem}.caption.txt (or a \"caption\" in {stem}.json or a CSV's caption column)"
#: the text fields an ``X.json`` may hold
JSON_TEXTS = ("caption", "genre", "lyrics", "keyscale", "timesignature", "language", "prompt_override")


class AceStep15Folder(SidecarFolder):
    description = "ACE-Step 1.5 song folder (X.wav + X.caption.txt [+ X.lyrics.txt or X.txt, X.json, a CSV with a file column])"
    sidecars = (Sidecar("caption", CAPTION, "caption", required=False, missing_note=None),
                Sidecar("lyrics", LYRICS, "lyrics", required=False, missing_note=None))

    def matches(self, path: Path) -> bool:
        return not is_hf_dataset(path) and super().matches(path)

    def row(self, clip: Clip, root: Path) -> dict[str, Any]:
        """A draft (the text files read), finished by :meth:`read` with the lyrics fallback, JSON and CSV."""
        return {"key": clip.key, "audio_path": str(clip.audio), "caption": clip.texts["caption"],
                "lyrics": clip.texts["lyrics"]}

    def read(self, path: Path, report: BadInputReport) -> Manifest:
        drafts = super().read(path, report)
        root = path.resolve()
        files = dataset_files(root)
        audio = {p.relative_to(root).with_suffix("").as_posix(): p for p in files
                 if p.suffix.lower() in AUDIO_EXTENSIONS}
        csv_files = [p for p in files if p.suffix.lower() == ".csv"]
        by_csv = read_csv_metadata(csv_files, audio, root, report)
        rows = []
        for draft in drafts.rows:
            row = self._finish(draft, by_csv.get(draft["key"]), report)
            if row is not None:
                rows.append(row)
        self._orphans(files, root, report)
        return Manifest(rows, drafts.source, drafts.format)

    def _finish(self, draft: dict[str, Any], entry: CsvEntry | None, report: BadInputReport) -> dict[str, Any] | None:
        apath = Path(draft["audio_path"])
        stem = apath.stem
        caption, lyrics = draft["caption"], draft["lyrics"]
        fallback = apath.with_name(stem + FALLBACK)
        if fallback.exists() or fallback.is_symlink():
            if lyrics:
                report.note(apath, f"{fallback.name} not read: {stem}{LYRICS} holds the lyrics")
            else:
                lyrics = read_sidecar(fallback, report, what="lyrics file ")
                if lyrics is None:
                    return None
        sung = bool(lyrics) and lyrics != INSTRUMENTAL
        meta = self._json(apath.with_name(stem + META), report)
        if meta is None:
            return None
        genre, prompt_override, fields = "", "", {"bpm": None, "keyscale": "", "timesignature": "", "language": ""}
        explicit: bool | None = None
        if meta:
            caption = meta.get("caption") or caption
            genre = meta.get("genre") or ""
            if meta.get("lyrics"):
                lyrics = meta["lyrics"]
                sung = lyrics != INSTRUMENTAL
            fields.update({k: meta[k] for k in ("bpm", "keyscale", "timesignature", "language") if meta.get(k)})
            if fields["language"] and fields["language"] not in NOT_SUNG:
                sung = True
            explicit = meta.get("is_instrumental")
            prompt_override = meta.get("prompt_override") or ""
        if entry is not None:
            fields["bpm"] = entry.bpm if entry.bpm is not None else fields["bpm"]
            fields["keyscale"] = entry.keyscale or fields["keyscale"]
            caption = entry.caption or caption
        use_genre = prompt_override == "genre"
        text = genre if use_genre else caption
        if not text:
            what = f"no genre (its {stem}{META} asks for the genre as the prompt)" if use_genre else "no caption"
            report.add(apath, f"{what}: ACE-Step 1.5 trains on labeled songs only; {CAPTION_HINT.format(stem=stem)}")
            return None
        return song_row(draft["key"], apath, caption=text, lyrics=lyrics, genre=genre,
                        prompt_source="genre" if use_genre else "caption",
                        is_instrumental=(not sung) if explicit is None else explicit, **fields)

    def _json(self, jpath: Path, report: BadInputReport) -> dict[str, Any] | None:
        """The song's ``X.json`` fields, checked ({} when there is none); None after reporting why it is unusable."""
        if not (jpath.exists() or jpath.is_symlink()):
            return {}
        try:
            data = json.loads(read_text(jpath))
        except TextError as exc:
            report.add(jpath, f"metadata file {exc}")
            return None
        except json.JSONDecodeError as exc:
            report.add(jpath, f"metadata file is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): "
                              f"fix it or delete it")
            return None
        if not isinstance(data, dict):
            report.add(jpath, f"metadata file holds a JSON {type(data).__name__}, not an object {{caption, bpm, "
                              f"keyscale, timesignature, language}}: fix it or delete it")
            return None
        out: dict[str, Any] = {}
        for name in JSON_TEXTS:
            value = data.get(name)
            if name == "genre" and value is None:
                value = data.get("genres")
            if name == "genre" and isinstance(value, list) and all(isinstance(v, str) for v in value):
                value = ", ".join(v.strip() for v in value if v.strip())
            if name == "language" and not value:
                value = data.get("vocal_language")
            text = text_value(value)
            if text is None:
                report.add(jpath, f"metadata file: \"{name}\" is a {type(value).__name__}, not a text: write it as "
                                  f"one string")
                return None
            out[name] = text
        if out["prompt_override"] not in ("", "caption", "genre"):
            report.add(jpath, f"metadata file: \"prompt_override\" is '{out['prompt_override']}', not \"caption\" or "
                              f"\"genre\": fix it or leave it out")
            return None
        out["bpm"], problem = parse_bpm(data.get("bpm"))
        if problem:
            report.note(jpath, f"{problem}; the prompt says N/A")
        for name in ("is_instrumental", "instrumental"):
            if name in data:
                if not isinstance(data[name], bool):
                    report.add(jpath, f"metadata file: \"{name}\" is {data[name]!r}, not true or false: fix it")
                    return None
                out["is_instrumental"] = data[name]
                break
        return out

    def _orphans(self, files: list[Path], root: Path, report: BadInputReport) -> None:
        """Report an ``X.txt`` or ``X.json`` with no audio file ``X`` beside it (the base reports the others)."""
        claimed = {p.relative_to(root).with_suffix("").as_posix() for p in files
                   if p.suffix.lower() in AUDIO_EXTENSIONS + OTHER_AUDIO_EXTENSIONS}
        for p in files:
            if p.name.endswith((CAPTION, LYRICS)) or p.suffix not in (FALLBACK, META):
                continue
            stem = p.name[: -len(p.suffix)]
            if (p.parent / stem).relative_to(root).as_posix() in claimed:
                continue
            if p.suffix == FALLBACK:
                report.add(p, f"lyrics file without audio: no audio file named {stem} ({EXTS}) beside it")
            else:
                report.add(p, f"metadata file without audio: no audio file named {stem} ({EXTS}) beside it (a "
                              f"dataset JSON {{metadata, samples}} is read when data= names the file itself)")
