"""From ``data=PATH`` to a list of usable examples, with the bad-input report filled in.

Steps: recognise the format (the plugin's readers), decode every audio stream of a row once to its role's
spec (a required stream corrupt, silent or missing → the row skipped with the file and the reason), and —
with the cache on — run each frozen encoder once per cache entry. An entry depends only on what its encoder
reads (its stream's bytes and spec, or the row's text fields), so editing a lyric re-encodes no audio. With
every entry already cached, no audio is decoded and no encoder is loaded.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from audiotrain.atomic_write import atomic_write_text
from audiotrain.errors import UserError
from audiotrain.data.audio_io import AudioError, AudioSpec, StreamSpec, content_hash, file_problem, load_audio
from audiotrain.data.cache import FeatureCache
from audiotrain.data.given import as_tensors, given_entry, given_features
from audiotrain.data.manifest import Manifest
from audiotrain.data.report import BadInputReport
from audiotrain.data.streams import as_streams, check_encoders, encoder_input, normalise_row, text_part, with_sources
from audiotrain.plugins.base import Plugin
from audiotrain.encoders.base import FrozenEncoder, stable_hash


class DataError(UserError):
    """The data cannot be used at all (bad path, unknown format, nothing usable)."""


@dataclass
class Item:
    """One usable example: its manifest row (files under ``row["audio"]``) plus what preparation learned."""

    row: dict[str, Any]
    fingerprint: str  # the example's identity: every cache entry it has (equal rows share it)
    duration: float  # seconds of real audio of the primary stream (before padding, after the cap)
    #: per encoder name, the id of its cache entry; an encoder of an absent optional stream has none
    entries: dict[str, str] = field(default_factory=dict)
    #: per present stream (declaration order), seconds of real audio
    durations: dict[str, float] = field(default_factory=dict)

    @property
    def audio_path(self) -> str | None:
        """The primary stream's file (the one a report about the whole example names); None for a row whose
        primary stream is given as features only (:mod:`audiotrain.data.given`)."""
        return self.row["audio"].get(next(iter(self.durations)))

    def stream_path(self, role: str) -> str | None:
        """The file of one of the item's streams; None when that (optional) stream is absent or only given."""
        return self.row["audio"].get(role) if role in self.durations else None


def resolve_manifest(data: str | None, plugin: Plugin, report: BadInputReport) -> Manifest:
    """Find the reader that recognises ``data`` and read its rows (files under ``audio: {role: path}``)."""
    if not data:
        raise DataError("No data given: add data=PATH (a folder of songs or a dataset saved to disk).")
    path = Path(str(data)).expanduser()
    if not path.exists():
        raise DataError(f"data={data} does not exist: give the path of your data folder or dataset.")
    path = path.resolve()
    report.source = str(path)
    for reader in plugin.readers():
        if reader.matches(path):
            manifest = reader.read(path, report)
            manifest.format = manifest.format or reader.description
            manifest.rows = [normalise_row(r) for r in manifest.rows]
            return manifest
    formats = "; ".join(r.description for r in plugin.readers())
    raise DataError(f"data={data} is in no format the '{plugin.name}' plugin reads ({formats}).")


def stream_id(audio_digest: str, spec: AudioSpec) -> str:
    """The cache identity of one decoded stream: its file's bytes and the spec it is decoded to."""
    return stable_hash("stream", audio_digest, spec.cache_fields())


def entry_id(tokenizer: FrozenEncoder, row: dict[str, Any], streams: dict[str, str]) -> str | None:
    """An encoder's cache entry depends only on what it reads: its stream (bytes + spec), or the text fields;
    outputs the row already holds (``given``, :mod:`audiotrain.data.given`) are their own entry."""
    given = given_features(row)
    if tokenizer.name in given:
        return given_entry(tokenizer.name, given[tokenizer.name])
    role = getattr(tokenizer, "stream", None)
    if role is None:
        return stable_hash("text", text_part(row))
    return streams.get(role)


def prepare_items(
    manifest: Manifest,
    plugin: Plugin | None,
    spec: AudioSpec | Mapping[str, StreamSpec],
    encoders: Sequence[FrozenEncoder],
    cache: FeatureCache | None,
    report: BadInputReport,
    progress: Any = None,
    device: str = "cpu",
) -> list[Item]:
    """Check every row once; fill the cache for the encoder entries that are missing.

    ``spec`` is the plugin's stream declaration (``Plugin.audio_streams``; a single AudioSpec is the one
    required ``main`` stream). A row whose required stream is missing or bad is skipped and reported with the
    file and the reason; an optional stream may be absent. With the cache on, a stream is decoded only when
    an encoder of it has no entry yet (or its duration is unknown): a fully cached row decodes nothing."""
    streams = as_streams(spec)
    check_encoders(streams, encoders)
    builder = _Builder(plugin, streams, encoders, cache, report, device)
    items: list[Item] = []
    seen: dict[str, Item] = {}
    locks = [cache.lock(t.name, t.cache_key()) for t in encoders] if cache else []
    for lk in locks:
        lk.acquire()
    try:
        iterator = progress(manifest.rows, "Preparing data") if progress else manifest.rows
        for raw_row in iterator:
            row = with_sources(normalise_row(raw_row), streams)
            ids = builder.stream_ids(row)
            if ids is None:
                continue
            entries = {t.name: e for t in encoders if (e := entry_id(t, row, ids)) is not None}
            fp = stable_hash(sorted(entries.items()), sorted(ids.items()))
            if fp in seen:  # a repeated row (repeat_count) shares the first one's work
                first = seen[fp]
                items.append(Item(row, fp, first.duration, first.entries, first.durations))
                continue
            durations = builder.build(row, ids, entries)
            if durations is None:
                continue
            item = Item(row, fp, durations[next(iter(durations))], entries, durations)
            seen[fp] = item
            items.append(item)
    finally:
        for lk in locks:
            lk.release()
    report.usable = len(items)
    if not items:
        raise DataError(
            f"No usable examples in {report.source}: all {len(report.skipped)} inputs were skipped "
            f"(see the report above); fix or replace those files."
        )
    return items


class _Builder:
    """The per-row work of :func:`prepare_items`: hash the streams, decode what is needed, run the encoders."""

    def __init__(self, plugin, streams, encoders, cache, report, device):
        self.plugin, self.streams, self.encoders = plugin, streams, list(encoders)
        self.cache, self.report, self.device = cache, report, device
        self.moved = False

    def stream_ids(self, row: dict[str, Any]) -> dict[str, str] | None:
        """``{role: stream id}`` of the present streams, in declaration order; None (reported) when unusable."""
        files = row["audio"]
        where = next(iter(files.values()), None) or f"row {row.get('key', '?')}"
        for role in files:
            if role not in self.streams:
                self.report.note(files[role], f"not used: the plugin reads the audio roles {', '.join(self.streams)}, "
                                              f"not '{role}'")
        ids: dict[str, str] = {}
        for role, spec in self.streams.items():
            path = files.get(role)
            if path is None:
                if spec.required and not self._given_stream(row, role):
                    self.report.add(where, f"no '{role}' audio file: this plugin needs one per example "
                                           f"(name it in the row's audio.{role})")
                    return None
                continue
            problem = file_problem(path)
            if problem is not None:
                self.report.add(path, _reason(role, f"audio file {problem}", self.streams))
                return None
            try:
                ids[role] = stream_id(_digest(self.cache, path), spec)
            except OSError as exc:
                self.report.add(path, _reason(role, f"cannot be read ({exc.strerror or type(exc).__name__})",
                                              self.streams))
                return None
        if not ids and not given_features(row):
            self.report.add(where, f"no audio file: name one of the roles {', '.join(self.streams)} in the row's audio")
            return None
        return ids

    def _given_stream(self, row: dict[str, Any], role: str) -> bool:
        """The row has given features and every encoder of ``role`` is among them (so the stream needs no file)."""
        given = given_features(row)
        return bool(given) and all(t.name in given for t in self.encoders if getattr(t, "stream", None) == role)

    def build(self, row: dict[str, Any], ids: dict[str, str], entries: dict[str, str]) -> dict[str, float] | None:
        cache = self.cache
        durations = {r: _cached_duration(cache, i) for r, i in ids.items()} if cache is not None else {}
        given = given_features(row)
        main = next(iter(self.streams))
        if main not in ids:  # no file for the primary stream: the row says how long it is
            seconds = row.get("duration")
            if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not seconds > 0:
                self.report.add(next(iter(row["audio"].values()), None) or f"row {row.get('key', '?')}",
                                f"no '{main}' audio file and no duration: a row with given features names its "
                                f"length in seconds (duration)")
                return None
            durations = {main: float(seconds), **durations}
        if cache is not None:
            self._drop_damaged(row, entries)
            for t in self.encoders:  # given outputs are cached as they are
                if t.name in given and not cache.has(t.name, t.cache_key(), entries[t.name]):
                    cache.save(t.name, t.cache_key(), entries[t.name], as_tensors(given[t.name]))
        todo = [t for t in self.encoders if t.name in entries and t.name not in given
                and (cache is None or not cache.has(t.name, t.cache_key(), entries[t.name]))]
        if cache is None:
            decode = list(ids)  # no cache: every stream is checked now and decoded again when used
        else:
            decode = [r for r in ids if durations[r] is None or any(t.stream == r for t in todo)]
        decoded: dict[str, dict[str, Any]] = {}
        for role in decode:
            spec, path = self.streams[role], row["audio"][role]
            notes: list[str] = []
            try:
                audio, length = load_audio(path, spec, notes)
            except AudioError as exc:
                self.report.add(path, _reason(role, str(exc), self.streams))
                return None
            for text in notes:
                self.report.note(path, _reason(role, text, self.streams))
            decoded[role] = {"audio": torch.from_numpy(audio), "audio_length": length}
            durations[role] = length / spec.sample_rate
        if cache is not None:
            for role in decode:
                _save_duration(cache, ids[role], durations[role])
            if todo:
                self._encode(row, decoded, todo, entries)
        return durations

    def _drop_damaged(self, row: dict[str, Any], entries: dict[str, str]) -> None:
        """A cache entry that is empty, truncated or not safetensors is never used: noted, removed, re-computed."""
        for t in self.encoders:
            if t.name not in entries:
                continue
            why = self.cache.damage(t.name, t.cache_key(), entries[t.name])
            if why:
                where = (row["audio"].get(getattr(t, "stream", None) or "") or next(iter(row["audio"].values()), None)
                         or f"row {row.get('key', '?')}")
                self.report.note(where, f"its cached '{t.name}' features were {why}; they were re-computed")
                self.cache.discard(t.name, t.cache_key(), entries[t.name])

    def _encode(self, row, decoded, todo, entries) -> None:
        if self.device != "cpu" and not self.moved:
            for t in self.encoders:  # frozen encoders run on the training device, once
                if hasattr(t, "to"):
                    t.to(self.device)
            self.moved = True
        example = self.plugin.prepare_example(row, None) if self.plugin is not None else dict(row)
        example["streams"] = decoded
        with torch.no_grad():
            for t in todo:
                inputs = encoder_input(example, t.stream)
                self.cache.save(t.name, t.cache_key(), entries[t.name], t.encode(_to_device(inputs, self.device)))


def _reason(role: str, reason: str, streams: Mapping[str, StreamSpec]) -> str:
    """The report's reason; a companion stream's (a stem's) names its role, the main file's needs no label."""
    return reason if role == next(iter(streams)) else f"{role} stream: {reason}"


def _digest(cache: FeatureCache | None, path: str) -> str:
    """The audio file's content hash, remembered per (path, size, mtime) so later runs do not re-read it."""
    if cache is None:
        return content_hash(path)
    st = os.stat(path)
    memo = cache.root / "meta" / f"file-{stable_hash(str(path), st.st_size, st.st_mtime_ns)}.txt"
    if memo.is_file():
        return memo.read_text().strip()
    digest = content_hash(path)
    atomic_write_text(memo, digest)
    return digest


def _to_device(example: dict[str, Any], device: str) -> dict[str, Any]:
    if device == "cpu":
        return example
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in example.items()}


def _meta_path(cache: FeatureCache, stream: str) -> Path:
    d = cache.root / "meta"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{stream}.json"


def _cached_duration(cache: FeatureCache, fp: str) -> float | None:
    p = _meta_path(cache, fp)
    if not p.is_file():
        return None
    try:
        return float(json.loads(p.read_text())["duration"])
    except (ValueError, KeyError):
        return None


def _save_duration(cache: FeatureCache, fp: str, duration: float) -> None:
    atomic_write_text(_meta_path(cache, fp), json.dumps({"duration": duration}))
