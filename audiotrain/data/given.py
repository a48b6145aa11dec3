"""Features a dataset already holds: a row's ``given`` encoder outputs, used as they are.

A reader of a dataset another tool preprocessed (codec codes already computed, token ids already made) puts
them in the row as ``given: {encoder name: {tensor name: array}}`` — exactly what that frozen encoder would
return — and the row's ``duration`` (seconds of the primary stream) when it has no audio file to measure. The
core then never runs that encoder on the row: its cache entry is the given tensors (the entry id is their
content hash, so an edited dataset re-caches only the changed rows), and without the cache they are handed to
the model as they are. Other encoders of the row (a stream it does have, the text fields) run as usual.
"""
from __future__ import annotations

import hashlib
from typing import Any, Mapping

import numpy as np
import torch

#: the row field that holds the given features
GIVEN = "given"


def given_features(row: Mapping[str, Any]) -> Mapping[str, Mapping[str, Any]]:
    """``{encoder name: {tensor name: array}}`` of a row (empty when it has none)."""
    return row.get(GIVEN) or {}


def as_tensors(values: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """One encoder's given outputs as CPU tensors (lists and numpy arrays converted, dtypes kept)."""
    return {str(k): v if isinstance(v, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(np.asarray(v)))
            for k, v in values.items()}


def given_entry(name: str, values: Mapping[str, Any]) -> str:
    """The cache entry id of an encoder's given outputs: their names, dtypes, shapes and bytes."""
    h = hashlib.sha256(f"given\x00{name}".encode())
    for key, t in sorted(as_tensors(values).items()):
        t = t.contiguous()
        h.update(f"\x00{key}\x00{t.dtype}\x00{tuple(t.shape)}\x00".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]
