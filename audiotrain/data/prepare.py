"""From ``data=PATH`` to a list of usable examples, with the bad-input report filled in.

Steps: recognise the format (the plugin's readers), decode every audio file once (corrupt, silent,
missing → skipped with its reason), and — with the cache on — run the frozen encoders once per
example into the feature cache. With every feature already cached, no audio is decoded and no
encoder is loaded.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from audiotrain.atomic_write import atomic_write_text
from audiotrain.errors import UserError
from audiotrain.data.audio_io import AudioError, AudioSpec, content_hash, load_audio
from audiotrain.data.cache import FeatureCache
from audiotrain.data.manifest import Manifest
from audiotrain.data.report import BadInputReport
from audiotrain.plugins.base import Plugin
from audiotrain.tokenizers.base import Tokenizer, stable_hash


class DataError(UserError):
    """The data cannot be used at all (bad path, unknown format, nothing usable)."""


@dataclass
class Item:
    """One usable example: its manifest row plus what preparation learned."""

    row: dict[str, Any]
    fingerprint: str
    duration: float  # seconds of real audio (before padding, after the cap)
    features: dict[str, torch.Tensor] | None = field(default=None, repr=False)


def resolve_manifest(data: str | None, plugin: Plugin, report: BadInputReport) -> Manifest:
    """Find the reader that recognises ``data`` and read its rows."""
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
            return manifest
    formats = "; ".join(r.description for r in plugin.readers())
    raise DataError(f"data={data} is in no format the '{plugin.name}' plugin reads ({formats}).")


def text_fields(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in ("audio_path", "key")}


def fingerprint(row: dict[str, Any], audio_digest: str, spec: AudioSpec) -> str:
    return stable_hash(audio_digest, text_fields(row), spec.cache_fields())


def prepare_items(
    manifest: Manifest,
    plugin: Plugin,
    spec: AudioSpec,
    tokenizers: Sequence[Tokenizer],
    cache: FeatureCache | None,
    report: BadInputReport,
    progress: Any = None,
    device: str = "cpu",
) -> list[Item]:
    """Check every row once; fill the cache for rows whose features are missing."""
    items: list[Item] = []
    seen: dict[str, Item] = {}
    moved = False
    locks = [cache.lock(t.name, t.cache_key()) for t in tokenizers] if cache else []
    for lk in locks:
        lk.acquire()
    try:
        iterator = progress(manifest.rows, "Preparing data") if progress else manifest.rows
        for row in iterator:
            path = row["audio_path"]
            try:
                digest = _digest(cache, path)
            except OSError:
                report.add(path, "audio file not found or unreadable")
                continue
            fp = fingerprint(row, digest, spec)
            if fp in seen:  # a repeated row (repeat_count) shares the first one's work
                items.append(Item(row, fp, seen[fp].duration))
                continue
            meta_ok = cache is not None and _cached_duration(cache, fp) is not None
            if meta_ok and all(cache.has(t.name, t.cache_key(), fp) for t in tokenizers):
                item = Item(row, fp, _cached_duration(cache, fp))
            else:
                try:
                    audio, length = load_audio(path, spec)
                except AudioError as exc:
                    report.add(path, str(exc))
                    continue
                item = Item(row, fp, length / spec.sample_rate)
                if cache is not None:
                    if device != "cpu" and not moved:
                        for t in tokenizers:  # frozen encoders run on the training device, once
                            if hasattr(t, "to"):
                                t.to(device)
                        moved = True
                    example = plugin.prepare_example(row, None)
                    example["audio"] = torch.from_numpy(audio)
                    example["audio_length"] = length
                    with torch.no_grad():
                        for t in tokenizers:
                            if not cache.has(t.name, t.cache_key(), fp):
                                cache.save(t.name, t.cache_key(), fp, t.encode(_to_device(example, device)))
                    _save_duration(cache, fp, item.duration)
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


def _meta_path(cache: FeatureCache, fp: str) -> Path:
    d = cache.root / "meta"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{fp}.json"


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
