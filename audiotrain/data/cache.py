"""Feature cache: frozen-encoder outputs stored once per (example content, encoder).

Layout: ``<root>/<namespace>/<tokenizer name>-<tokenizer cache_key>/<entry id>.safetensors``. An entry id
covers only what that encoder reads (``prepare.entry_id``): for an encoder of an audio stream, that stream's
file bytes and the spec it is decoded to (sample rate, channels, length bounds); for a text encoder, the row's
text fields. So a new file for one stream re-encodes only that stream's encoders, an edited lyric re-encodes
no audio, and a change of encoder config/weights (its cache_key) gives a new folder. ``meta/`` keeps each
decoded stream's duration (by stream id) and each audio file's content hash (by path, size and mtime).
Writes are atomic (temp file + rename: a killed job leaves no entry, never half of one) and building is serialised per encoder with a file lock, so
two jobs (e.g. a sweep) building the same cache at once neither corrupt it nor duplicate work.

Entries are read as data (safetensors) and never trusted blindly: :meth:`FeatureCache.damage` says why an entry
on disk cannot be used (empty, truncated, not safetensors); preparation then notes it in the bad-input report
and re-computes it, and a read that fails later raises :class:`DamagedEntry` so the dataset re-computes it too.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from filelock import FileLock
from safetensors.torch import load_file, save_file

from audiotrain.atomic_write import atomic_path
from audiotrain.data.walk import tag_cache
from audiotrain.safe_files import first_line

CACHE_DISK_FULL_FIX = "free some space, or set cache_dir= (or AUDIOTRAIN_CACHE) to a disk with room"


class DamagedEntry(RuntimeError):
    """A cache entry that cannot be read (the caller re-computes it)."""


class FeatureCache:
    def __init__(self, root: str | Path, namespace: str):
        self.root = Path(root) / namespace
        self.root.mkdir(parents=True, exist_ok=True)
        tag_cache(Path(root))  # CACHEDIR.TAG: `data=` walks (and backups) pass the cache by, wherever it lives

    def dir_for(self, tok_name: str, tok_key: str) -> Path:
        d = self.root / f"{tok_name}-{tok_key}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def path(self, tok_name: str, tok_key: str, fingerprint: str) -> Path:
        return self.dir_for(tok_name, tok_key) / f"{fingerprint}.safetensors"

    def has(self, tok_name: str, tok_key: str, fingerprint: str) -> bool:
        return self.path(tok_name, tok_key, fingerprint).is_file()

    def load(self, tok_name: str, tok_key: str, fingerprint: str) -> dict[str, torch.Tensor]:
        path = self.path(tok_name, tok_key, fingerprint)
        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors' own error types for a bad header; OSError for a vanished file
            raise DamagedEntry(f"{path} is {self.damage(tok_name, tok_key, fingerprint) or first_line(exc, 120)}") from None

    def damage(self, tok_name: str, tok_key: str, fingerprint: str) -> str | None:
        """Why the entry on disk cannot be trusted ("empty (0 bytes)", "truncated or damaged (...)"); None when
        it is absent or reads as a complete safetensors file."""
        from safetensors import safe_open

        path = self.path(tok_name, tok_key, fingerprint)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        if size == 0:
            return "empty (0 bytes)"
        try:
            with safe_open(str(path), framework="pt") as fh:
                if not list(fh.keys()):
                    return "without any tensors"
        except Exception as exc:  # a header that does not parse or promises more bytes than the file has
            return f"truncated or damaged ({first_line(exc, 120)})"
        return None

    def discard(self, tok_name: str, tok_key: str, fingerprint: str) -> None:
        self.path(tok_name, tok_key, fingerprint).unlink(missing_ok=True)

    def save(self, tok_name: str, tok_key: str, fingerprint: str, tensors: Mapping[str, torch.Tensor]) -> None:
        with atomic_path(self.path(tok_name, tok_key, fingerprint), kept="the entries cached before it are kept",
                         fix=CACHE_DISK_FULL_FIX) as tmp:
            save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp))

    def lock(self, tok_name: str, tok_key: str) -> FileLock:
        return FileLock(str(self.dir_for(tok_name, tok_key) / ".build.lock"))

