"""A frozen encoder as a FrozenEncoder: its module in eval mode, without gradients, run on the device it was moved to.

Subclasses set ``name``/``stream`` and compute :meth:`FrozenFeature.features`. :meth:`FrozenFeature.lazy`
puts one behind a :class:`LazyEncoder`, so a fully cached run never builds the module; the key is known up
front from the module's config and its weight files' fingerprints (:func:`weights_key`).
"""
from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch

from audiotrain.encoders.base import FrozenEncoder, file_fingerprint, stable_hash
from audiotrain.encoders.lazy import LazyEncoder


def weights_key(tag: str, *config: Any, files: Iterable[str | Path] = ()) -> str:
    """Cache key of a module from its config parts and its weight files' fingerprints, without loading it."""
    return stable_hash(tag, *config, *(file_fingerprint(str(p)) for p in files))


class FrozenFeature(FrozenEncoder):
    """``module``: an ``nn.Module`` (frozen here) or an object holding one with ``to(device)`` and ``device``."""

    def __init__(self, module: Any, key: str):
        if isinstance(module, torch.nn.Module):
            module = module.eval().requires_grad_(False)
        self.module = module
        self._key = key

    def cache_key(self) -> str:
        return self._key

    @property
    def device(self) -> torch.device:
        if isinstance(self.module, torch.nn.Module):
            first = next(self.module.parameters(), None)
            return first.device if first is not None else torch.device("cpu")
        return torch.device(self.module.device)

    def to(self, device: Any) -> "FrozenFeature":
        self.module.to(device)
        return self

    def encode(self, example: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return self.features(example)

    @abstractmethod
    def features(self, example: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """The named CPU tensors of one example (called under ``torch.no_grad``)."""

    @classmethod
    def lazy(cls, key: str, build: Callable[[], "FrozenFeature"]) -> LazyEncoder:
        """This feature behind a :class:`LazyEncoder` keyed ``key``: ``build`` runs on first encode."""
        return LazyEncoder(cls.name, key, build, stream=cls.stream)
