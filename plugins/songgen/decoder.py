"""SongGen's decoder (the ``SongGenForCausalLM`` layout, spec songgen.md §3.2): a pre-LN Transformer over the
summed embeddings of N codebook streams, with cross-attention to a conditioning memory.

State-dict names (``cfg`` = the ``decoder`` group of a resolved preset)::

    model.decoder.embed_tokens.{i}.weight       Embedding(vocab_size, hidden) per stream i < N
    model.decoder.embed_positions.weights       sinusoidal table [max_position_embeddings, hidden]: an
                                                nn.Parameter with requires_grad=False (a state-dict key and
                                                counted in parameters(), as in the reference)
    model.decoder.layers.{l}.self_attn.{k,v,q,out}_proj.weight          (no bias)
    model.decoder.layers.{l}.self_attn_layer_norm.{weight,bias}
    model.decoder.layers.{l}.encoder_attn.{k,v,q,out}_proj.weight       (no bias)
    model.decoder.layers.{l}.encoder_attn_layer_norm.{weight,bias}
    model.decoder.layers.{l}.fc1.weight, fc2.weight                     (no bias)
    model.decoder.layers.{l}.final_layer_norm.{weight,bias}
    model.decoder.layer_norm.{weight,bias}
    lm_heads.{i}.weight                         Linear(hidden, vocab_size), no bias, i < N
    vocal_lm_heads.{k}.weight                   only with add_vocal_loss (mixed_pro), k < num_codebooks

N = num_codebooks (8), or 2 * num_codebooks for the parallel dual-track patterns, whose summed embedding is
divided by 2 (the mean of the two tracks' sums).

Forward: ``h = sum_i embed_tokens[i](ids[:, i]) (/2 for parallel) + P[offset + t]``, dropout, then each layer
``h += drop(self_attn(LN(h)))`` (causal, optional key padding), ``h += drop(cross_attn(LN(h), memory))``,
``h += drop(fc2(act_drop(gelu(fc1(LN(h))))))``; final LayerNorm; logits per head.

Positions (musicgen's table): with ``half = hidden // 2`` and ``f_j = exp(-j * ln(10000) / (half - 1))`` for
``j < half``, row ``p`` is ``[cos(p * f_0..f_{half-1}), sin(p * f_0..f_{half-1})]`` (cos half first, a zero
column appended for an odd width). Position ids are ``offset + 0 .. S-1`` (``position_offset``, 0 for a full
sequence; with a cache, the positions it already holds): no padding offset, left padding is not skipped. A
sequence longer than the table is refused (the reference would regrow it).

Attention uses ``F.scaled_dot_product_attention`` (scale ``head_dim ** -0.5``). A padded memory position gets
exactly zero weight. A memory row that is entirely masked gives, for every query, the plain mean of the memory
values (what the reference's additive ``finfo.min`` mask yields in float32; never NaN). Init: every Linear and
Embedding normal(0, initializer_factor = 0.02), LayerNorms ones/zeros.

KV cache (generation, ``kv_cache.KVCache``): ``forward(new_ids, memory, memory_mask, cache=cache)`` runs only the
new positions; each layer's self-attention appends their projected keys/values to the cache and attends over all
positions held (causal within the new ones), and its cross-attention projects the memory once and reuses it. The
result equals the same positions of one uncached forward over the whole sequence (to float rounding). A cache
takes no ``attention_mask`` (generation has no key padding) and no gradient checkpointing.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .kv_cache import KVCache, LayerCache


def sinusoidal_table(num_positions: int, dim: int, device: Any = None) -> torch.Tensor:
    """``[num_positions, dim]`` float32: ``[cos(p f), sin(p f)]`` with ``f_j = exp(-j ln(10000) / (dim//2 - 1))``."""
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float32, device=device) * -(math.log(10000.0) / (half - 1)))
    angle = torch.arange(num_positions, dtype=torch.float32, device=device)[:, None] * freq[None, :]
    table = torch.cat([torch.cos(angle), torch.sin(angle)], dim=1)
    if dim % 2:
        table = torch.cat([table, torch.zeros(num_positions, 1, device=device)], dim=1)
    return table


class SinusoidalPositions(nn.Module):
    """``weights``: the fixed table (a frozen Parameter, saved in the state dict); ``forward(S, offset)`` rows."""

    def __init__(self, num_positions: int, dim: int) -> None:
        super().__init__()
        self.weights = nn.Parameter(sinusoidal_table(num_positions, dim), requires_grad=False)

    def reset(self) -> None:
        """Recompute the table in place (after a meta-device build is materialised)."""
        with torch.no_grad():
            self.weights.copy_(sinusoidal_table(*self.weights.shape, device=self.weights.device))

    def forward(self, length: int, offset: int = 0) -> torch.Tensor:
        if offset + length > self.weights.size(0):
            raise ValueError(f"a decoder sequence of {offset + length} steps is longer than the "
                             f"{self.weights.size(0)} positions of the model (max_position_embeddings)")
        return self.weights[offset:offset + length]


class Attention(nn.Module):
    """Multi-head attention without biases (``k_proj, v_proj, q_proj, out_proj``), via SDPA."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.head_dim, self.dropout = heads, dim // heads, dropout
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.out_proj = nn.Linear(dim, dim, bias=False)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                causal: bool = False, empty: torch.Tensor | None = None,
                cache: LayerCache | None = None) -> torch.Tensor:
        """``x [B, S, D]``; ``memory [B, M, D]`` (None: self-attention); ``mask`` bool, True = attend,
        broadcastable to ``[B, 1, S, M]``; ``empty [B]`` bool: rows whose memory is entirely masked (their
        output is the mean of the memory values). ``cache``: self-attention appends this call's keys/values
        to it and attends over all it holds (``mask`` must then be None); cross-attention takes the memory's
        from it (projected on the first call)."""
        q = self._split(self.q_proj(x))
        if memory is None:
            k, v = self._split(self.k_proj(x)), self._split(self.v_proj(x))
            if cache is not None:
                past = cache.length
                k, v = cache.append(k, v)
                if past and causal:  # the new queries see every cached position and the new ones up to theirs
                    s = q.shape[2]
                    causal = False
                    if s > 1:
                        mask = (torch.arange(past + s, device=x.device)[None, :]
                                <= torch.arange(past, past + s, device=x.device)[:, None])
        elif cache is not None and cache.cross is not None:
            k, v = cache.cross
        else:
            k, v = self._split(self.k_proj(memory)), self._split(self.v_proj(memory))
            if cache is not None:
                cache.cross = (k, v)
        p = self.dropout if self.training else 0.0
        if causal and mask is None:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        if empty is not None:
            out = torch.where(empty[:, None, None, None], v.mean(dim=2, keepdim=True).expand_as(out), out)
        b, _, s, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, s, self.heads * self.head_dim))


class DecoderLayer(nn.Module):
    """Pre-LN block: causal self-attention, cross-attention to the memory, GELU FFN; residual each."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        dim, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
        self.dropout, self.activation_dropout = float(cfg["dropout"]), float(cfg["activation_dropout"])
        self.self_attn = Attention(dim, heads, float(cfg["attention_dropout"]))
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.encoder_attn = Attention(dim, heads, float(cfg["attention_dropout"]))
        self.encoder_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, int(cfg["ffn_dim"]), bias=False)
        self.fc2 = nn.Linear(int(cfg["ffn_dim"]), dim, bias=False)
        self.final_layer_norm = nn.LayerNorm(dim)

    def forward(self, h: torch.Tensor, self_mask: torch.Tensor | None, memory: torch.Tensor | None,
                memory_mask: torch.Tensor | None, empty: torch.Tensor | None,
                cache: LayerCache | None = None) -> torch.Tensor:
        drop = lambda x: F.dropout(x, self.dropout, self.training)  # noqa: E731
        h = h + drop(self.self_attn(self.self_attn_layer_norm(h), mask=self_mask, causal=True, cache=cache))
        if memory is not None:
            h = h + drop(self.encoder_attn(self.encoder_attn_layer_norm(h), memory, memory_mask, empty=empty,
                                           cache=cache))
        ff = F.dropout(F.gelu(self.fc1(self.final_layer_norm(h))), self.activation_dropout, self.training)
        return h + drop(self.fc2(ff))


class SongGenDecoder(nn.Module):
    """``embed_tokens``, ``embed_positions``, ``layers``, ``layer_norm``: ids ``[B, N, S]`` to states ``[B, S, D]``."""

    def __init__(self, cfg: Mapping[str, Any], streams: int) -> None:
        super().__init__()
        dim = int(cfg["hidden_size"])
        self.streams, self.dropout = streams, float(cfg["dropout"])
        self.embed_scale = 0.5 if str(cfg["track_pattern"]).startswith("parallel") else 1.0
        self.embed_tokens = nn.ModuleList(nn.Embedding(int(cfg["vocab_size"]), dim) for _ in range(streams))
        self.embed_positions = SinusoidalPositions(int(cfg["max_position_embeddings"]), dim)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(int(cfg["num_hidden_layers"])))
        self.layer_norm = nn.LayerNorm(dim)
        self.gradient_checkpointing = False

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The summed stream embeddings ``[B, S, D]`` (halved for the parallel patterns)."""
        if input_ids.dim() != 3 or input_ids.size(1) != self.streams:
            raise ValueError(f"decoder input_ids must be [batch, {self.streams} streams, steps], "
                             f"got {list(input_ids.shape)}")
        total = sum(table(input_ids[:, i]) for i, table in enumerate(self.embed_tokens))
        return total * self.embed_scale if self.embed_scale != 1.0 else total

    def forward(self, input_ids: torch.Tensor, memory: torch.Tensor | None = None,
                memory_mask: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                position_offset: int = 0, cache: KVCache | None = None) -> torch.Tensor:
        """States ``[B, S, D]`` of ``input_ids [B, N, S]``; with ``cache``, ``input_ids`` are the positions after
        the ones it holds (see the module docstring) and it is updated in place."""
        if cache is not None:
            if attention_mask is not None:
                raise ValueError("a KV cache takes no decoder attention_mask (generation has no key padding)")
            if len(cache.layers) != len(self.layers):
                raise ValueError(f"the KV cache has {len(cache.layers)} layers, the decoder {len(self.layers)}")
            if position_offset not in (0, cache.length):
                raise ValueError(f"position_offset={position_offset} disagrees with the {cache.length} positions "
                                 f"of the KV cache (leave it 0 with a cache)")
            position_offset = cache.length
        h = self.embed(input_ids)
        s = h.size(1)
        h = F.dropout(h + self.embed_positions(s, position_offset).to(h.dtype), self.dropout, self.training)
        self_mask = None
        if attention_mask is not None:
            keys = attention_mask.to(h.device).bool()[:, None, None, :]  # [B, 1, 1, S]
            causal = torch.ones(s, s, dtype=torch.bool, device=h.device).tril()
            self_mask = (causal & keys) | torch.eye(s, dtype=torch.bool, device=h.device)  # a query sees itself
        mem_mask = empty = None
        if memory is not None and memory_mask is not None:
            valid = memory_mask.to(memory.device).bool()  # [B, M]
            empty = ~valid.any(dim=1)
            mem_mask = (valid | empty[:, None])[:, None, None, :]  # an empty row attends all: never NaN
            memory = memory.to(h.dtype)
        use_ckpt = self.gradient_checkpointing and self.training and torch.is_grad_enabled() and cache is None
        for i, layer in enumerate(self.layers):
            if use_ckpt:
                h = checkpoint(layer, h, self_mask, memory, mem_mask, empty, use_reentrant=False)
            else:
                h = layer(h, self_mask, memory, mem_mask, empty, None if cache is None else cache.layers[i])
        return self.layer_norm(h)


class _Model(nn.Module):
    """The ``model.`` level of the reference layout (it holds only ``decoder``)."""

    def __init__(self, cfg: Mapping[str, Any], streams: int) -> None:
        super().__init__()
        self.decoder = SongGenDecoder(cfg, streams)


class SongGenForCausalLM(nn.Module):
    """The decoder with its heads. ``cfg`` is a resolved preset's ``decoder`` group.

    ``forward(input_ids [B, N, S], memory [B, M, D] | None, memory_mask [B, M] | None, attention_mask [B, S] |
    None, position_offset, cache: KVCache | None)`` returns ``{"logits": [B, N, S, vocab], "vocal_logits":
    [B, num_codebooks, S, vocab] or None}``.
    """

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        self.cfg = dict(cfg)
        dim, vocab = int(cfg["hidden_size"]), int(cfg["vocab_size"])
        pattern = str(cfg["track_pattern"])
        self.num_streams = int(cfg["num_codebooks"]) * (2 if pattern.startswith("parallel") else 1)
        self.model = _Model(cfg, self.num_streams)
        self.lm_heads = nn.ModuleList(nn.Linear(dim, vocab, bias=False) for _ in range(self.num_streams))
        self.vocal_lm_heads = (nn.ModuleList(nn.Linear(dim, vocab, bias=False)
                                             for _ in range(int(cfg["num_codebooks"])))
                               if cfg["add_vocal_loss"] else None)
        self.init_weights()

    def init_weights(self) -> None:
        """normal(0, initializer_factor) for Linear and Embedding weights, zero biases; LayerNorm 1/0; the table."""
        std = float(self.cfg.get("initializer_factor", 0.02))
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if not self.model.decoder.embed_positions.weights.is_meta:
            self.model.decoder.embed_positions.reset()

    @property
    def decoder(self) -> SongGenDecoder:
        return self.model.decoder

    def forward(self, input_ids: torch.Tensor, memory: torch.Tensor | None = None,
                memory_mask: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                position_offset: int = 0, cache: KVCache | None = None) -> dict[str, torch.Tensor | None]:
        h = self.model.decoder(input_ids, memory, memory_mask, attention_mask, position_offset, cache)
        logits = torch.stack([head(h) for head in self.lm_heads], dim=1)
        vocal = (torch.stack([head(h) for head in self.vocal_lm_heads], dim=1)
                 if self.vocal_lm_heads is not None else None)
        return {"logits": logits, "vocal_logits": vocal}
