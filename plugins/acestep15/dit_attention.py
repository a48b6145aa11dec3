"""The attention of every ACE-Step 1.5 DiT stack: Qwen3-style GQA with per-head q/k RMSNorm.

Layout (state-dict names): ``q_proj`` (H -> heads*head_dim), ``k_proj`` / ``v_proj`` (H -> kv_heads*head_dim),
``o_proj`` (heads*head_dim -> H), all without bias (``attention_bias``), and ``q_norm`` / ``k_norm``, RMSNorms of
width ``head_dim`` applied to each head before RoPE.

- Self-attention rotates q and k with RoPE (the "rotate half" convention: channel ``i`` pairs with ``i + D/2``,
  ``inv_freq = theta^(-2i/D)``), positions ``0..T-1``.
- Cross-attention (``is_cross``) takes k/v from the encoder states, k-normed, without RoPE.
- Masks are boolean ``(B, 1, Tq, Tk)`` (True = may attend) or None; :func:`self_attention_mask` and
  :func:`cross_attention_mask` build them, and return None when nothing is masked, so a batch without padding
  runs exactly the unmasked computation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """RMSNorm with a learned scale (``weight``), computed in float32 and cast back."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rope_tables(length: int, dim: int, theta: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)``, each ``(length, dim)`` float32, for positions ``0..length-1`` (computed, never stored)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64, device=device).float() / dim))
    freqs = torch.outer(torch.arange(length, dtype=torch.int64, device=device).float(), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate ``x (B, heads, T, D)`` by ``rope``'s ``(T, D)`` tables, in float32, cast back to ``x.dtype``."""
    cos, sin = rope
    xf = x.float()
    half = xf.shape[-1] // 2
    rotated = torch.cat((-xf[..., half:], xf[..., :half]), dim=-1)
    return (xf * cos + rotated * sin).to(x.dtype)


def self_attention_mask(valid: torch.Tensor | None, length: int, window: int | None,
                        device: torch.device) -> torch.Tensor | None:
    """``(B|1, 1, T, T)`` bool: key ``j`` is visible to query ``i`` when ``|i - j| <= window`` (if a window is
    given) and ``valid[b, j]``. A padded query keeps its own position visible, so its row never is empty (its
    output is discarded). None when nothing is masked."""
    band = None
    if window is not None and length > window + 1:
        pos = torch.arange(length, device=device)
        band = (pos[:, None] - pos[None, :]).abs() <= window
    if valid is not None and bool(valid.all()):
        valid = None
    if valid is None:
        return None if band is None else band[None, None]
    v = valid.to(device=device, dtype=torch.bool)
    allowed = v[:, None, :].expand(-1, length, -1)
    if band is not None:
        allowed = allowed & band
    eye = torch.eye(length, dtype=torch.bool, device=device)
    allowed = allowed | (eye & ~v[:, :, None])
    return allowed[:, None]


def cross_attention_mask(encoder_valid: torch.Tensor | None, q_length: int) -> torch.Tensor | None:
    """``(B, 1, Tq, S)`` bool from the encoder mask ``(B, S)``; a row with no valid key attends to all of its
    keys (so it stays finite). None when nothing is masked."""
    if encoder_valid is None or bool(encoder_valid.all()):
        return None
    v = encoder_valid.to(torch.bool)
    v = v | ~v.any(dim=1, keepdim=True)
    return v[:, None, None, :].expand(-1, 1, q_length, -1)


class DiTAttention(nn.Module):
    """Multi-head attention with grouped k/v heads and q/k RMSNorm (see the module doc)."""

    def __init__(self, hidden: int, heads: int, kv_heads: int, head_dim: int, eps: float = 1e-6,
                 bias: bool = False, is_cross: bool = False, kv_hidden: int | None = None) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim, self.is_cross = heads, kv_heads, head_dim, is_cross
        kv_in = kv_hidden or hidden
        self.q_proj = nn.Linear(hidden, heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(kv_in, kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(kv_in, kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(heads * head_dim, hidden, bias=bias)
        self.q_norm = RMSNorm(head_dim, eps)
        self.k_norm = RMSNorm(head_dim, eps)

    def _split(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, heads, self.head_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                encoder_states: torch.Tensor | None = None) -> torch.Tensor:
        """``x (B, T, H)`` -> ``(B, T, H)``; ``encoder_states (B, S, kv_hidden)`` for cross-attention."""
        b, t, _ = x.shape
        source = encoder_states if self.is_cross else x
        q = self.q_norm(self._split(self.q_proj(x), self.heads)).transpose(1, 2)
        k = self.k_norm(self._split(self.k_proj(source), self.kv_heads)).transpose(1, 2)
        v = self._split(self.v_proj(source), self.kv_heads).transpose(1, 2)
        if rope is not None and not self.is_cross:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=self.heads != self.kv_heads)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.heads * self.head_dim))
