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
from audiotrain.encoders.lazy import LazyEncoder


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
    workers: int = 0,
) -> list[Item]:
    """Check every row once; fill the cache for the encoder entries that are missing.

    ``spec`` is the plugin's stream declaration (``Plugin.audio_streams``; a single AudioSpec is the one
    required ``main`` stream). A row whose required stream is missing or bad is skipped and reported with the
    file and the reason; an optional stream may be absent. With the cache on, a stream is decoded only when
    an encoder of it has no entry yet (or its duration is unknown): a fully cached row decodes nothing.

    The rows that need decoding or encoding are worked on by ``workers`` processes (``prepare_pool``; 0: this
    process), with one progress bar over them; what is kept, skipped and reported, and in what order, does not
    depend on the number of workers, and neither do the cache's contents. On a GPU the workers decode and this
    process runs the frozen encoders on the device."""
    streams = as_streams(spec)
    check_encoders(streams, encoders)
    builder = _Builder(plugin, streams, encoders, cache, report, device)
    slots: list[Any] = []  # per usable-looking row: an Item, None (skipped) or ("repeat", first slot, row)
    pending: list[tuple[int, dict[str, Any], dict[str, str], dict[str, str], str]] = []
    first: dict[str, int] = {}  # fingerprint -> the slot of its first row (repeat_count rows share its work)
    locks = [cache.lock(t.name, t.cache_key()) for t in encoders] if cache else []
    for lk in locks:
        lk.acquire()
    try:
        for raw_row in manifest.rows:
            row = with_sources(normalise_row(raw_row), streams)
            ids = builder.stream_ids(row)
            if ids is None:
                continue
            entries = {t.name: e for t in encoders if (e := entry_id(t, row, ids)) is not None}
            fp = stable_hash(sorted(entries.items()), sorted(ids.items()))
            if fp in first:
                slots.append(("repeat", first[fp], row, ids, entries, fp))
                continue
            first[fp] = len(slots)
            slots.append(None)
            pending.append((len(slots) - 1, row, ids, entries, fp))
        bar = progress(_Bar(sum(1 for _ in pending)), "Preparing data") if progress and pending else None
        while pending:  # one round, unless rows waited on work another row of the round could not finish
            pending = builder.round(pending, slots, workers, bar)
        # a row equal to one that was skipped (a file with the same bytes under another name) is checked on its
        # own, so that it is reported under its own name
        pending = [(i, *slot[2:]) for i, slot in enumerate(slots)
                   if isinstance(slot, tuple) and slots[slot[1]] is None]
        while pending:
            pending = builder.round(pending, slots, workers, None)
        if bar is not None and hasattr(bar, "close"):
            bar.close()
    finally:
        for lk in locks:
            lk.release()
    items: list[Item] = []
    for i, slot in enumerate(slots):
        if isinstance(slot, tuple):  # a repeated row: the first one's item, if it was usable
            src = slots[slot[1]]
            slot = slots[i] = None if src is None else Item(slot[2], src.fingerprint, src.duration, src.entries,
                                                            src.durations)
        if slot is not None:
            items.append(slot)
    report.usable = len(items)
    if not items:
        raise DataError(
            f"No usable examples in {report.source}: all {len(report.skipped)} inputs were skipped "
            f"(see the report above); fix or replace those files."
        )
    return items


class _Bar:
    """The rows being prepared, for a progress bar advanced by hand (``update``) as each one is done."""

    def __init__(self, n: int):
        self.n = n

    def __iter__(self):
        return iter(range(self.n))

    def __len__(self) -> int:
        return self.n


@dataclass
class _Job:
    """A row that needs work: the streams to decode and the encoders to run."""

    row: dict[str, Any]
    ids: dict[str, str]
    entries: dict[str, str]
    decode: list[str]
    todo: list[str]  # encoder names
    durations: dict[str, float | None]
    slot: int = 0
    fingerprint: str = ""
    #: streams another row of this round decodes (role -> stream id): their durations come from its result
    waits: dict[str, str] = field(default_factory=dict)


@dataclass
class _Done:
    """What a worker found: the durations (None: the row is skipped), the report lines in order, and — when the
    encoders run here (a GPU) — the decoded streams."""

    durations: dict[str, float] | None
    events: list[tuple[str, str, str]]
    decoded: dict[str, dict[str, Any]] | None = None


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

    def plan(self, row: dict[str, Any], ids: dict[str, str], entries: dict[str, str],
             scheduled: set[tuple[str, str]], decoding: set[str]) -> "_Job | dict[str, float] | None":
        """This process's part of a row: durations known from the cache, given outputs saved, damaged entries
        dropped; the rest is a :class:`_Job` — without the entries and streams an earlier row of the round
        (``scheduled``: (encoder, entry); ``decoding``: stream ids) already works on. Returns the durations
        when nothing is left, or None (reported)."""
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
        if cache is None:  # no cache: every stream is checked now and decoded again when used
            return _Job(row, ids, entries, list(ids), [], durations)
        self._drop_damaged(row, entries)
        for t in self.encoders:  # given outputs are cached as they are
            if t.name in given and not cache.has(t.name, t.cache_key(), entries[t.name]):
                cache.save(t.name, t.cache_key(), entries[t.name], as_tensors(given[t.name]))
        todo = [t for t in self.encoders if t.name in entries and t.name not in given
                and (t.name, entries[t.name]) not in scheduled and not cache.has(t.name, t.cache_key(), entries[t.name])]
        decode = [r for r in ids if any(t.stream == r for t in todo) or (durations[r] is None and ids[r] not in decoding)]
        waits = {r: ids[r] for r in ids if durations[r] is None and r not in decode}
        scheduled.update((t.name, entries[t.name]) for t in todo)
        decoding.update(ids[r] for r in decode)
        if not decode and not todo and not waits:
            return durations
        return _Job(row, ids, entries, decode, [t.name for t in todo], durations, waits=waits)

    def round(self, pending: list, slots: list, workers: int, bar: Any) -> list:
        """Plan every pending row, work on the jobs over ``workers`` processes, fill ``slots`` in row order (the
        report lines too); the rows whose waited-on work failed elsewhere are returned for another round."""
        scheduled: set[tuple[str, str]] = set()
        decoding: set[str] = set()
        jobs: list[_Job] = []
        for slot, row, ids, entries, fp in pending:
            planned = self.plan(row, ids, entries, scheduled, decoding)
            if isinstance(planned, _Job):
                planned.slot, planned.fingerprint = slot, fp
                jobs.append(planned)
            else:
                slots[slot] = None if planned is None else Item(row, fp, planned[next(iter(planned))], entries, planned)
                _advance(bar)
        busy = [j for j in jobs if j.decode or j.todo]
        here = self.device != "cpu"  # encoders on the GPU run in this process; the workers decode
        if here and not self.moved and any(j.todo for j in busy):
            for t in self.encoders:  # frozen encoders run on the training device, once
                if hasattr(t, "to"):
                    t.to(self.device)
            self.moved = True
        if workers > 0 and not here:  # built once here, so the forked workers share its weights (not N copies)
            needed = {n for j in busy for n in j.todo}
            for t in self.encoders:
                if t.name in needed and isinstance(t, LazyEncoder):
                    t.get()
        from audiotrain.data.prepare_pool import ordered_map

        results = iter(ordered_map(lambda i: self.work(busy[i], encode=not here), len(busy), workers,
                                   lambda i: next(iter(busy[i].row["audio"].values()), None) or f"row {i}"))
        known: dict[str, float] = {}  # stream id -> seconds, from this round's results
        again = []
        for job in jobs:
            done = next(results) if (job.decode or job.todo) else _Done(dict(job.durations), [])
            if done.durations is not None and here and job.todo:
                done = self._encode_here(job, done)
            for kind, path, text in done.events:
                (self.report.add if kind == "skip" else self.report.note)(path, text)
            if done.durations is None:
                slots[job.slot] = None
                _advance(bar)
                continue
            for role in job.decode:
                known[job.ids[role]] = done.durations[role]
                if self.cache is not None:
                    _save_duration(self.cache, job.ids[role], done.durations[role])
            for role, sid in job.waits.items():
                done.durations[role] = known.get(sid)
            if any(v is None for v in done.durations.values()) or (self.cache is not None and not all(
                    self.cache.has(t.name, t.cache_key(), job.entries[t.name]) for t in self.encoders
                    if t.name in job.entries)):
                again.append((job.slot, job.row, job.ids, job.entries, job.fingerprint))  # the other row failed
                continue
            first = done.durations[next(iter(done.durations))]
            slots[job.slot] = Item(job.row, job.fingerprint, first, job.entries, done.durations)
            _advance(bar)
        return again

    def work(self, job: "_Job", encode: bool) -> "_Done":
        """Decode the job's streams and (``encode``) run its encoders into the cache — in a worker process or
        here. Never raises for a file: an unreadable stream or an encoder's error is the row's skip."""
        events: list[tuple[str, str, str]] = []
        durations = dict(job.durations)
        decoded: dict[str, dict[str, Any]] = {}
        for role in job.decode:
            spec, path = self.streams[role], job.row["audio"][role]
            notes: list[str] = []
            try:
                audio, length = load_audio(path, spec, notes)
            except AudioError as exc:
                return _Done(None, events + [("skip", path, _reason(role, str(exc), self.streams))])
            except Exception as exc:  # a decoder library's own failure on this file
                return _Done(None, events + [("skip", path, _reason(
                    role, f"cannot be decoded ({type(exc).__name__}: {exc})", self.streams))])
            events += [("note", path, _reason(role, text, self.streams)) for text in notes]
            decoded[role] = {"audio": torch.from_numpy(audio), "audio_length": length}
            durations[role] = length / spec.sample_rate
        if job.todo and encode:
            failed = self._encode(job, decoded)
            if failed is not None:
                return _Done(None, events + [failed])
        return _Done(durations, events, None if encode or not job.todo else decoded)

    def _encode_here(self, job: "_Job", done: "_Done") -> "_Done":
        failed = self._encode(job, done.decoded or {})
        if failed is not None:
            return _Done(None, done.events + [failed])
        return _Done(done.durations, done.events)

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

    def _encode(self, job: "_Job", decoded: dict[str, dict[str, Any]]) -> tuple[str, str, str] | None:
        """Run the job's encoders on the decoded streams and save their entries; the skip line if one fails."""
        example = self.plugin.prepare_example(job.row, None) if self.plugin is not None else dict(job.row)
        example["streams"] = decoded
        by_name = {t.name: t for t in self.encoders}
        with torch.no_grad():
            for name in job.todo:
                t = by_name[name]
                try:
                    inputs = encoder_input(example, t.stream)
                    out = t.encode(_to_device(inputs, self.device))
                except UserError:  # a setting's problem (a missing tool, a bad option), not this file's
                    raise
                except Exception as exc:  # noqa: BLE001 - the file's problem, reported like any bad input
                    role = t.stream or next(iter(self.streams))
                    where = job.row["audio"].get(role) or next(iter(job.row["audio"].values()), None) or \
                        f"row {job.row.get('key', '?')}"
                    return ("skip", where, f"the '{name}' encoder failed on it ({type(exc).__name__}: {exc})")
                self.cache.save(t.name, t.cache_key(), job.entries[name], out)
        return None


def _advance(bar: Any) -> None:
    if bar is not None and hasattr(bar, "update"):
        bar.update(1)


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
