"""ACE-Step's rotary position embedding (mixed half-cache / interleaved-rotation layout).

The cache follows the "half" layout: for positions ``p`` and ``inv_freq`` of length ``D/2``,
``freqs = outer(p, inv_freq)`` and ``cos = cos(cat(freqs, freqs))`` (shape ``(P, D)``), same for sin.

The rotation, however, treats *interleaved* channel pairs ``(x[2i], x[2i+1])`` as the
(real, imag) parts: ``rot(x)[2i] = -x[2i+1]`` and ``rot(x)[2i+1] = x[2i]``, and
``out = x * cos + rot(x) * sin``. So pair ``i`` is rotated by the two (generally different)
frequencies stored at cache columns ``2i`` and ``2i+1``. Real ACE-Step weights were trained
with exactly this convention, so it is reproduced as is.
"""
from __future__ import annotations

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    """Cos/sin cache for positions ``0..max_position_embeddings-1``.

    Args:
        dim: the attention head dimension ``D`` (even).
        max_position_embeddings: cache length built up front; longer inputs extend it.
        base: the rope theta (1e6 for ACE-Step).

    ``forward(x, seq_len)`` returns ``(cos, sin)``, each ``(seq_len, D)`` in ``x.dtype``.
    All buffers are non-persistent (never part of the state dict).
    """

    def __init__(self, dim: int, max_position_embeddings: int = 32768, base: float = 1_000_000.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"rotary dim must be even, got {dim}")
        self.dim = dim
        self.base = float(base)
        self.max_position_embeddings = int(max_position_embeddings)
        self.register_buffer("inv_freq", self._inv_freq(None), persistent=False)
        cos, sin = self._table(self.max_position_embeddings, None)
        self.register_buffer("cos_cached", cos, persistent=False)
        self.register_buffer("sin_cached", sin, persistent=False)

    def _inv_freq(self, device: torch.device | None) -> torch.Tensor:
        exponent = torch.arange(0, self.dim, 2, dtype=torch.int64, device=device).float() / self.dim
        return 1.0 / (self.base ** exponent)

    def _table(self, length: int, device: torch.device | None) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = self._inv_freq(device)
        positions = torch.arange(length, dtype=torch.int64, device=device).float()
        freqs = torch.outer(positions, inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()

    def _ensure(self, seq_len: int, device: torch.device) -> None:
        stale = (
            self.cos_cached.is_meta
            or self.cos_cached.device != device
            or self.cos_cached.shape[0] < seq_len
            or self.cos_cached.dtype != torch.float32
        )
        if stale:
            length = max(seq_len, self.max_position_embeddings)
            self.inv_freq = self._inv_freq(device)
            self.cos_cached, self.sin_cached = self._table(length, device)

    def forward(self, x: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(cos, sin)`` of shape ``(seq_len, D)`` cast to ``x.dtype``."""
        self._ensure(int(seq_len), x.device)
        return self.cos_cached[:seq_len].to(x.dtype), self.sin_cached[:seq_len].to(x.dtype)


def rotate_interleaved(x: torch.Tensor) -> torch.Tensor:
    """``(..., D)`` → ``(..., D)`` with each pair ``(a, b) = (x[2i], x[2i+1])`` mapped to ``(-b, a)``."""
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    real, imag = pairs.unbind(-1)
    return torch.stack((-imag, real), dim=-1).flatten(-2)


def apply_rotary_emb(x: torch.Tensor, freqs_cis: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate ``x`` of shape ``(B, H, T, D)`` with ``(cos, sin)`` of shape ``(T, D)``.

    Computed in float32 and cast back to ``x.dtype``.
    """
    cos, sin = freqs_cis
    cos = cos[None, None].float()
    sin = sin[None, None].float()
    out = x.float() * cos + rotate_interleaved(x).float() * sin
    return out.to(x.dtype)
