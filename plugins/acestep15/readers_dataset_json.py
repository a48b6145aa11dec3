"""ACE-Step 1.5's dataset JSON (what its dataset builder saves): ``{"metadata": {...}, "samples": [...]}``.

``data=`` names the ``.json`` file. Each sample is an ``AudioSample``: ``id`` (8 hex characters; the ``<id>.pt`` name),
``audio_path``, ``filename``, ``caption``, ``genre``, ``lyrics`` (``"[Instrumental]"`` when none), ``raw_lyrics``,
``formatted_lyrics``, ``bpm``, ``keyscale``, ``timesignature``, ``duration`` (whole seconds), ``language``,
``is_instrumental``, ``custom_tag``, ``labeled``, ``prompt_override`` (null, ``"caption"`` or ``"genre"``). The lyrics
trained on are ``lyrics``, as ACE-Step 1.5 preprocesses them. A relative ``audio_path`` is tried against the working
directory (as ACE-Step 1.5 resolves it), then the JSON's folder and its parent.

``metadata`` (``DatasetMetadata``) sets, for every sample:

- ``custom_tag`` (a sample's own ``custom_tag`` wins) put before the caption (``tag_position: "prepend"``, the
  default: ``"tag, caption"``), after it (``"append"``: ``"caption, tag"``) or in its place (``"replace"``);
- ``genre_ratio``: the percentage (0-100) of the labeled samples captioned with their ``genre`` instead of their
  ``caption``. As ACE-Step 1.5 picks them: ``int(labeled × ratio / 100)`` samples, the first of ``0..labeled-1``
  shuffled by Python's ``random`` seeded with 42 (:func:`select_genre_indices`; a private ``random.Random(42)``,
  which draws the same as the original's global ``random.seed(42)`` without touching the global state). The
  indices count the labeled samples in file order, before any audio is checked, so a file gives the same picks
  here as there. A sample's ``prompt_override`` wins over the pick. A picked sample with no genre keeps its
  caption (noted) where ACE-Step 1.5 would train it on an empty prompt.

ACE-Step 1.5 preprocesses labeled samples only (``labeled``; a sample without that field counts as labeled when it
has a caption): the others are reported. Reported too, each as ``row N (id): reason``: a sample that is not an
object, no or a missing audio file, a text field of the wrong type, an id that cannot name a file or repeats one.
A file that is not JSON, or whose metadata cannot be used, is one error naming what to fix.
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any, Mapping

from audiotrain.data.audio_io import AUDIO_EXTENSIONS, unsupported
from audiotrain.data.manifest import Manifest
from audiotrain.data.readers.hf_audio_dataset import audio_problem, resolve_audio
from audiotrain.data.report import BadInputReport
from audiotrain.data.text_files import TextError, read_text
from audiotrain.plugins.base import DataReader

from audiotrain_acestep15.song_row import INSTRUMENTAL, parse_bpm, song_row, stable_id, text_value

TAG_POSITIONS = ("prepend", "append", "replace")
GENRE_SEED = 42
MAX_JSON_BYTES = 256 << 20
SAMPLE_TEXTS = ("caption", "genre", "lyrics", "keyscale", "timesignature", "language", "custom_tag")
_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


def select_genre_indices(count: int, genre_ratio: float) -> set[int]:
    """Which of ``count`` labeled samples are captioned with their genre (see the module docstring)."""
    chosen = int(count * genre_ratio / 100)
    order = list(range(count))
    random.Random(GENRE_SEED).shuffle(order)
    return set(order[:chosen])


def with_tag(text: str, tag: str, position: str) -> str:
    """``text`` with the custom tag put where ``position`` says (nothing to do without a tag)."""
    if not tag:
        return text
    if position == "replace" or not text:
        return tag
    return f"{tag}, {text}" if position == "prepend" else f"{text}, {tag}"


def _data_error(message: str) -> Exception:
    from audiotrain.data.prepare import DataError

    return DataError(message)


def load_dataset_json(path: Path) -> tuple[dict[str, Any], list[Any]]:
    """``(metadata, samples)`` of a dataset JSON, the metadata checked; a DataError says what is wrong."""
    try:
        data = json.loads(read_text(path, limit=MAX_JSON_BYTES))
    except TextError as exc:
        raise _data_error(f"data={path} {exc}.") from None
    except json.JSONDecodeError as exc:
        raise _data_error(f"data={path} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): fix it, "
                          f"or save the dataset again from ACE-Step 1.5's dataset tab.") from None
    if not isinstance(data, dict) or not isinstance(data.get("samples"), list):
        raise _data_error(f"data={path} is not an ACE-Step 1.5 dataset JSON: it needs a \"samples\" list (and "
                          f"\"metadata\"); for a folder of songs pass the folder.")
    meta = data.get("metadata") or {}
    if not isinstance(meta, dict):
        raise _data_error(f"data={path}: \"metadata\" is a JSON {type(meta).__name__}, not an object: fix it.")
    position = meta.get("tag_position") or "prepend"
    if position not in TAG_POSITIONS:
        raise _data_error(f"data={path}: metadata.tag_position is {position!r}, not one of {', '.join(TAG_POSITIONS)}: "
                          f"fix it.")
    ratio = meta.get("genre_ratio") or 0
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio <= 100:
        raise _data_error(f"data={path}: metadata.genre_ratio is {ratio!r}, not a percentage from 0 to 100: fix it.")
    tag = text_value(meta.get("custom_tag"))
    if tag is None:
        raise _data_error(f"data={path}: metadata.custom_tag is not a text: write it as one string.")
    return {"tag_position": position, "genre_ratio": ratio, "custom_tag": tag}, data["samples"]


def is_labeled(sample: Any) -> bool:
    """Whether ACE-Step 1.5 would preprocess this sample (its ``labeled`` flag; without one: it has a caption)."""
    if not isinstance(sample, dict):
        return False
    if "labeled" in sample:
        return sample["labeled"] is True
    return isinstance(sample.get("caption"), str) and bool(sample["caption"].strip())


class AceStep15DatasetJSON(DataReader):
    description = "ACE-Step 1.5 dataset JSON ({metadata, samples})"

    def matches(self, path: Path) -> bool:
        return path.is_file() and path.suffix.lower() == ".json"

    def read(self, path: Path, report: BadInputReport) -> Manifest:
        path = path.resolve()
        meta, samples = load_dataset_json(path)
        labeled = [i for i, s in enumerate(samples) if is_labeled(s)]
        genre = {labeled[j] for j in select_genre_indices(len(labeled), meta["genre_ratio"])}
        rows: list[dict[str, Any]] = []
        seen: dict[str, int] = {}
        for i, sample in enumerate(samples):
            row = self._row(i, sample, i in genre, meta, path, report)
            if row is None:
                continue
            if row["id"] in seen:
                report.add(path, f"row {i} ({row['id']}): repeats the id of row {seen[row['id']]} (the ids name the "
                                 f"preprocessed files): give it another id")
                continue
            seen[row["id"]] = i
            rows.append(row)
        return Manifest(rows, str(path), self.description)

    def _row(self, i: int, sample: Any, use_genre: bool, meta: Mapping[str, Any], path: Path,
             report: BadInputReport) -> dict[str, Any] | None:
        if not isinstance(sample, dict):
            report.add(path, f"row {i} (?): a JSON {type(sample).__name__}, not a sample object: fix it")
            return None
        audio = sample.get("audio_path")
        sid = sample.get("id") if isinstance(sample.get("id"), str) and sample.get("id") else None
        if sid is None:
            sid = stable_id(str(audio))
        elif not _ID.match(sid):
            report.add(path, f"row {i} ({sid[:40]}): the id cannot name a file (.pt): use letters, digits, - and _")
            return None
        where = f"row {i} ({sid})"
        if not is_labeled(sample):
            report.add(path, f"{where}: not labeled: ACE-Step 1.5 trains on labeled samples only; write its caption "
                             f"(and \"labeled\": true), e.g. in ACE-Step 1.5's dataset tab")
            return None
        if not isinstance(audio, str) or not audio.strip():
            report.add(path, f"{where}: no audio_path: name the song's audio file")
            return None
        apath = resolve_audio(audio, path.parent)
        if apath is None:
            report.add(path, f"{where}: {audio_problem(audio, path.parent)}")
            return None
        if apath.suffix.lower() not in AUDIO_EXTENSIONS:
            report.add(path, f"{where}: {audio}: {unsupported(apath.suffix.lower())}")
            return None
        texts: dict[str, str] = {}
        for name in SAMPLE_TEXTS:
            text = text_value(sample.get(name))
            if text is None:
                report.add(path, f"{where}: \"{name}\" is a {type(sample[name]).__name__}, not a text: write it as one "
                                 f"string")
                return None
            texts[name] = text
        override = sample.get("prompt_override")
        if override not in (None, "", "caption", "genre"):
            report.add(path, f"{where}: \"prompt_override\" is {override!r}, not null, \"caption\" or \"genre\": fix it")
            return None
        use_genre = override == "genre" or (use_genre and override != "caption")
        if use_genre and not texts["genre"] and texts["caption"]:
            report.note(apath, f"{where} of {path.name}: picked for its genre, which is empty: captioned with its "
                               f"caption instead")
            use_genre = False
        chosen = texts["genre"] if use_genre else texts["caption"]
        caption = with_tag(chosen, texts["custom_tag"] or meta["custom_tag"], meta["tag_position"])
        if not caption:
            report.add(path, f"{where}: no caption: write one (or a custom_tag)")
            return None
        bpm, problem = parse_bpm(sample.get("bpm"))
        if problem:
            report.note(apath, f"{where} of {path.name}: {problem}; the prompt says N/A")
        duration = sample.get("duration")
        duration = int(duration) if isinstance(duration, (int, float)) and not isinstance(duration, bool) \
            and duration > 0 else None
        flag = sample.get("is_instrumental")
        return song_row(sid, apath, caption=caption, lyrics=texts["lyrics"] or INSTRUMENTAL, genre=texts["genre"],
                        prompt_source="genre" if use_genre else "caption", bpm=bpm, keyscale=texts["keyscale"],
                        timesignature=texts["timesignature"], language=texts["language"], duration=duration,
                        is_instrumental=flag if isinstance(flag, bool) else None, sample_id=sid)
