"""The LLaMA decoder stack VALL-E v5 runs over ``inputs_embeds`` (spec valle.md §3.1).

Plain PyTorch, written from the spec: RMSNorm, rotary position embeddings (half-split
"rotate_half" layout, theta 10000), multi-head attention with ``q/k/v/o_proj`` (no bias,
kv heads = heads), a gated MLP ``down(gelu(gate(x)) * up(x))`` (exact GELU) and pre-norm
residual blocks. Module names follow the released checkpoint (``model.layers.{i}.self_attn.q_proj``,
``model.layers.{i}.mlp.gate_proj``, ``model.layers.{i}.input_layernorm``, ``model.norm`` ...).
There is no token embedding (``vocab_size=0``) and no persistent buffer: the rotary
frequencies are recomputed from the position ids on each call.

Incremental decoding: pass a :class:`KVCache` to :meth:`LlamaModel.forward` and each attention layer keeps the
keys (already rotated at their own positions) and values it projected, so the next call feeds only the new
tokens, with the caller's position ids for them. Training never passes a cache and runs exactly as without one.

Shapes: B batch, S sequence, D hidden size, H heads, Dh = D / H.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class RMSNorm(nn.Module):
    """``weight * x / sqrt(mean(x^2) + eps)``, the statistics in float32. (..., D) -> (..., D)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


def rope_cos_sin(position_ids: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary tables for (B, S) integer positions -> cos, sin of shape (B, 1, S, Dh)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=position_ids.device, dtype=torch.float32) / head_dim))
    freqs = position_ids.float()[..., None] * inv_freq  # (B, S, Dh/2)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos()[:, None].to(dtype), emb.sin()[:, None].to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, S, Dh) queries or keys by the (B, 1, S, Dh) tables."""
    return x * cos + _rotate_half(x) * sin


class LayerCache:
    """One layer's keys and values so far, (B, H, P, Dh) each (None before the first call)."""

    def __init__(self) -> None:
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.keys is None else self.keys.shape[2]

    def extend(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new tokens' (B, H, S, Dh) keys and values; returns all of them (B, H, P + S, Dh)."""
        self.keys = k if self.keys is None else torch.cat([self.keys, k], dim=2)
        self.values = v if self.values is None else torch.cat([self.values, v], dim=2)
        return self.keys, self.values


class KVCache:
    """The projected keys and values of every layer for incremental (AR) decoding; ``len()`` = tokens seen."""

    def __init__(self, layers: int) -> None:
        self.layers = [LayerCache() for _ in range(layers)]

    def __len__(self) -> int:
        return len(self.layers[0])


class Attention(nn.Module):
    """Multi-head self-attention with rotary positions. (B, S, D) -> (B, S, D)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, rope_theta: float = 10000.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} is not divisible by {heads} heads")
        self.heads, self.head_dim = heads, dim // heads
        self.dropout, self.rope_theta = dropout, rope_theta
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                cache: LayerCache | None = None) -> torch.Tensor:
        """``mask``: bool (B, 1, S, S + P), True = may attend; None = plain causal (or, after P cached tokens, one
        query that sees them all). ``cache``: the P earlier tokens' keys and values, extended by these."""
        b, s, _ = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, s, self.heads, self.head_dim).transpose(1, 2)

        q = apply_rope(split(self.q_proj(x)), cos, sin)
        k = apply_rope(split(self.k_proj(x)), cos, sin)
        v = split(self.v_proj(x))
        if cache is not None:
            k, v = cache.extend(k, v)
        p = self.dropout if self.training else 0.0
        if mask is None and k.shape[2] > s:  # one new query after cached keys: it may see every key
            if s != 1:
                raise ValueError(f"{s} new tokens after {k.shape[2] - s} cached ones need a mask")
            out = F.scaled_dot_product_attention(q, k, v, scale=1.0 / math.sqrt(self.head_dim))
        elif mask is None:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True, scale=1.0 / math.sqrt(self.head_dim))
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, scale=1.0 / math.sqrt(self.head_dim))
        return self.o_proj(out.transpose(1, 2).reshape(b, s, -1))


class GatedMLP(nn.Module):
    """``down_proj(gelu(gate_proj(x)) * up_proj(x))`` (GeGLU, no bias). (B, S, D) -> (B, S, D)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """Pre-norm block: ``h = x + attn(norm1(x)); out = h + mlp(norm2(h))``."""

    def __init__(self, dim: int, heads: int, ffn_hidden: int, dropout: float, eps: float, rope_theta: float):
        super().__init__()
        self.self_attn = Attention(dim, heads, dropout, rope_theta)
        self.mlp = GatedMLP(dim, ffn_hidden)
        self.input_layernorm = RMSNorm(dim, eps)
        self.post_attention_layernorm = RMSNorm(dim, eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                cache: LayerCache | None = None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


def causal_padding_mask(lengths: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Bool (B, 1, S, S): query i may see key j iff j <= i and j < length (right padding).

    Padded query rows still see key 0, so no row is fully masked (no NaN from softmax).
    """
    idx = torch.arange(seq_len, device=lengths.device)
    causal = idx[None, :] <= idx[:, None]  # (S, S)
    valid = idx[None, :] < lengths[:, None]  # (B, S)
    return (causal[None] & valid[:, None, :])[:, None]


class LlamaModel(nn.Module):
    """The decoder stack: ``layers`` then final ``norm``; inputs are embeddings, not ids.

    ``forward(inputs_embeds (B, S, D), position_ids (B, S) long, lengths (B,) long | None)``
    returns hidden states (B, S, D). Attention is causal; ``lengths`` adds a key padding mask
    for right-padded batches (None = every row full length). ``gradient_checkpointing`` trades
    compute for memory while training. ``cache`` (:class:`KVCache`, inference only, unpadded rows):
    the earlier tokens' keys and values; this call's tokens attend to them and are appended.
    """

    def __init__(self, dim: int, heads: int, layers: int, ffn_hidden: int, dropout: float = 0.0,
                 eps: float = 1e-6, rope_theta: float = 10000.0):
        super().__init__()
        self.head_dim, self.rope_theta = dim // heads, rope_theta
        self.layers = nn.ModuleList(DecoderLayer(dim, heads, ffn_hidden, dropout, eps, rope_theta) for _ in range(layers))
        self.norm = RMSNorm(dim, eps)
        self.gradient_checkpointing = False

    def forward(self, inputs_embeds: torch.Tensor, position_ids: torch.Tensor, lengths: torch.Tensor | None = None,
                cache: KVCache | None = None) -> torch.Tensor:
        b, s, _ = inputs_embeds.shape
        cos, sin = rope_cos_sin(position_ids, self.head_dim, self.rope_theta, inputs_embeds.dtype)
        mask = None
        if lengths is not None and bool((lengths < s).any()):
            if cache is not None:
                raise ValueError("a KV cache decodes unpadded rows: pass lengths=None or full lengths")
            mask = causal_padding_mask(lengths.to(inputs_embeds.device), s)
        past = 0 if cache is None else len(cache)
        if past and s > 1:  # new query i sits at past + i: it sees keys 0 .. past + i
            idx = torch.arange(past + s, device=inputs_embeds.device)
            mask = (idx[None, :] <= past + torch.arange(s, device=idx.device)[:, None])[None, None]
        h = inputs_embeds
        for i, layer in enumerate(self.layers):
            if cache is not None:
                h = layer(h, cos, sin, mask, cache.layers[i])
            elif self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                h = checkpoint(layer, h, cos, sin, mask, use_reentrant=False)
            else:
                h = layer(h, cos, sin, mask)
        return self.norm(h)
