"""A FrozenEncoder whose heavy model is built on first use.

The cache key is known up front (config + weight-file fingerprints), so a run whose features are
all cached never loads the frozen encoder at all.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from audiotrain.encoders.base import FrozenEncoder


class LazyEncoder(FrozenEncoder):
    def __init__(self, name: str, key: str, factory: Callable[[], FrozenEncoder], stream: str | None = None):
        self.name = name
        self._key = key
        self._factory = factory
        self._inner: FrozenEncoder | None = None
        self.stream = stream

    @property
    def loaded(self) -> bool:
        return self._inner is not None

    def get(self) -> FrozenEncoder:
        if self._inner is None:
            self._inner = self._factory()
        return self._inner

    def cache_key(self) -> str:
        return self._key

    def encode(self, example: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        return self.get().encode(example)

    def to(self, device: Any) -> "LazyEncoder":
        inner = self.get()
        if hasattr(inner, "to"):
            inner.to(device)
        return self

    def release(self) -> None:
        """Drop the heavy model (e.g. after the cache is built)."""
        self._inner = None
