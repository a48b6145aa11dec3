"""Feature cache: frozen-encoder outputs stored once per (example content, encoder).

Layout: ``<root>/<namespace>/<tokenizer name>-<tokenizer cache_key>/<entry id>.safetensors``. An entry id
covers only what that encoder reads (``prepare.entry_id``): for an encoder of an audio stream, that stream's
file bytes and the spec it is decoded to (sample rate, channels, length bounds); for a text encoder, the row's
text fields. So a new file for one stream re-encodes only that stream's encoders, an edited lyric re-encodes
no audio, and a change of encoder config/weights (its cache_key) gives a new folder. ``meta/`` keeps each
decoded stream's duration (by stream id) and each audio file's content hash (by path, size and mtime).
Writes are atomic (temp file + rename: a killed job leaves no entry, never half of one) and building is serialised per encoder with a file lock, so
two jobs (e.g. a sweep) building the same cache at once neither corrupt it nor duplicate work.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from filelock import FileLock
from safetensors.torch import load_file, save_file

from audiotrain.atomic_write import atomic_path

CACHE_DISK_FULL_FIX = "free some space, or set cache_dir= (or AUDIOTRAIN_CACHE) to a disk with room"


class FeatureCache:
    def __init__(self, root: str | Path, namespace: str):
        self.root = Path(root) / namespace
        self.root.mkdir(parents=True, exist_ok=True)

    def dir_for(self, tok_name: str, tok_key: str) -> Path:
        d = self.root / f"{tok_name}-{tok_key}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def path(self, tok_name: str, tok_key: str, fingerprint: str) -> Path:
        return self.dir_for(tok_name, tok_key) / f"{fingerprint}.safetensors"

    def has(self, tok_name: str, tok_key: str, fingerprint: str) -> bool:
        return self.path(tok_name, tok_key, fingerprint).is_file()

    def load(self, tok_name: str, tok_key: str, fingerprint: str) -> dict[str, torch.Tensor]:
        return load_file(str(self.path(tok_name, tok_key, fingerprint)))

    def save(self, tok_name: str, tok_key: str, fingerprint: str, tensors: Mapping[str, torch.Tensor]) -> None:
        with atomic_path(self.path(tok_name, tok_key, fingerprint), kept="the entries cached before it are kept",
                         fix=CACHE_DISK_FULL_FIX) as tmp:
            save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp))

    def lock(self, tok_name: str, tok_key: str) -> FileLock:
        return FileLock(str(self.dir_for(tok_name, tok_key) / ".build.lock"))

