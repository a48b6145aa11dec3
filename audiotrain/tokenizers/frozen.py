"""A frozen encoder as a Tokenizer: its module in eval mode, without gradients, run on the device it was moved to.

Subclasses set ``name``/``stream`` and compute :meth:`FrozenFeature.features`. :meth:`FrozenFeature.lazy`
puts one behind a :class:`LazyTokenizer`, so a fully cached run never builds the module; the key is known up
front from the module's config and its weight files' fingerprints (:func:`weights_key`).
"""
from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch

from audiotrain.tokenizers.base import Tokenizer, file_fingerprint, stable_hash
from audiotrain.tokenizers.lazy import LazyTokenizer


def weights_key(tag: str, *config: Any, files: Iterable[str | Path] = ()) -> str:
    """Cache key of a module from its config parts and its weight files' fingerprints, without loading it."""
    return stable_hash(tag, *config, *(file_fingerprint(str(p)) for p in files))


class FrozenFeature(Tokenizer):
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
    def lazy(cls, key: str, build: Callable[[], "FrozenFeature"]) -> LazyTokenizer:
        """This feature behind a :class:`LazyTokenizer` keyed ``key``: ``build`` runs on first encode."""
        return LazyTokenizer(cls.name, key, build, stream=cls.stream)
