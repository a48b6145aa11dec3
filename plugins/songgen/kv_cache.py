"""The key/value cache of SongGen's autoregressive generation (``decoder.SongGenDecoder.forward(cache=...)``).

One :class:`KVCache` serves one generation; it holds, per decoder layer:

- the self-attention keys and values of every position decoded so far, ``[B, heads, length, head_dim]``,
  appended as the steps come (in a buffer that doubles when full, so a step copies only its own column);
- the cross-attention keys and values of the fixed memory ``[B, heads, M, head_dim]``, projected once on the
  first step and reused for every later one.

What is stored is the output of the layers' ``k_proj`` / ``v_proj`` modules, so whatever wraps them (a PEFT LoRA
layer adds its low-rank update there) is part of the cached values. ``length`` is the number of positions held,
which is also the position offset of the next step's sinusoidal embedding. The cache belongs to one model, one
memory and one batch: a new generation needs a new cache.
"""
from __future__ import annotations

import torch


class LayerCache:
    """The cached keys and values of one decoder layer (see the module docstring)."""

    def __init__(self, capacity: int = 0) -> None:
        self.capacity = int(capacity)
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None
        self.length = 0
        self.cross: tuple[torch.Tensor, torch.Tensor] | None = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the new positions' ``k, v [B, H, s, hd]``; return every position's ``[B, H, length, hd]``."""
        s = k.shape[2]
        need = self.length + s
        if self._k is None or need > self._k.shape[2]:
            size = max(need, self.capacity, 2 * (self._k.shape[2] if self._k is not None else 0))
            grown_k = k.new_empty((*k.shape[:2], size, k.shape[3]))
            grown_v = v.new_empty((*v.shape[:2], size, v.shape[3]))
            if self._k is not None:
                grown_k[:, :, :self.length] = self._k[:, :, :self.length]
                grown_v[:, :, :self.length] = self._v[:, :, :self.length]
            self._k, self._v = grown_k, grown_v
        self._k[:, :, self.length:need] = k
        self._v[:, :, self.length:need] = v
        self.length = need
        return self._k[:, :, :need], self._v[:, :, :need]


class KVCache:
    """Per-layer caches of one generation; ``capacity`` (the most positions expected, e.g. ``max_len``) sizes the
    buffers up front so they never need to grow."""

    def __init__(self, num_layers: int, capacity: int = 0) -> None:
        self.layers = [LayerCache(capacity) for _ in range(int(num_layers))]

    @property
    def length(self) -> int:
        """Positions decoded so far (the next step's position offset)."""
        return self.layers[0].length if self.layers else 0
