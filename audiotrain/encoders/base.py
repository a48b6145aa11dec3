"""The FrozenEncoder seam: turns one modality of an example into model inputs, with no trainable weights.

Codec encoders (discrete codes), VAEs (continuous latents), text encoders, phonemisers and BPE lyric
tokenizers are all frozen encoders. Their ``cache_key`` names everything that changes their output (config, weights,
sample rate), so the feature cache can reuse outputs across runs and rebuild when it changes.
"""
from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from typing import Any, Mapping

import torch


def stable_hash(*parts: Any) -> str:
    """Short, stable hex digest of JSON-serialisable parts (dict keys sorted)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:16]


def state_dict_digest(module: torch.nn.Module) -> str:
    """Digest of a module's weights (names, shapes, dtypes and values)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        if t.device.type != "meta":
            h.update(t.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


class FrozenEncoder(ABC):
    """One modality → tensors. ``encode`` takes one prepared example and returns named CPU tensors."""

    #: short name, used as the namespace of its features in the cache
    name: str = "tokenizer"
    #: the audio stream (a role of ``Plugin.audio_streams``, e.g. ``"main"``) whose decoded waveform ``encode``
    #: reads as ``example["audio"]`` / ``example["audio_length"]``; None: it reads only the text fields. Its
    #: cache entries depend on that stream alone (or on the text fields alone).
    stream: str | None = None

    @abstractmethod
    def cache_key(self) -> str:
        """Stable string that changes whenever this tokenizer's output could change."""

    @abstractmethod
    def encode(self, example: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Encode one example into named tensors (CPU, no batch dimension)."""


def file_fingerprint(path: str) -> str:
    """Cheap identity of a (possibly multi-GB) weights file: size + first and last MiB."""
    import os

    h = hashlib.sha256()
    size = os.path.getsize(path)
    h.update(str(size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(1 << 20))
        if size > (2 << 20):
            fh.seek(-(1 << 20), os.SEEK_END)
            h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]
