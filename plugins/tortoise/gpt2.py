"""The GPT-2 core of TorToiSe's UnifiedVoice, with Hugging Face GPT-2's state-dict names and weight layout.

Written here rather than taken from ``transformers.GPT2Model`` because UnifiedVoice uses GPT-2 without its token
and position tables (TorToiSe deletes ``wte`` and replaces ``wpe`` by a zero function) and feeds it embeddings
only: owning the blocks keeps exactly the released keys whatever the installed transformers version registers
(``attn.bias`` / ``attn.masked_bias`` mask buffers up to 4.30, neither since) and leaves its cache and
attention-backend API out of the training path.

State-dict names (``N`` < layers, ``D`` = model_dim)::

    h.N.ln_1.{weight,bias}            LayerNorm(D, eps 1e-5)
    h.N.attn.c_attn.{weight,bias}     Conv1D: weight (D, 3D), x @ W + b (HF's (in, out) orientation)
    h.N.attn.c_proj.{weight,bias}     Conv1D (D, D)
    h.N.ln_2.{weight,bias}
    h.N.mlp.c_fc.{weight,bias}        Conv1D (D, 4D), then gelu_new (the tanh approximation)
    h.N.mlp.c_proj.{weight,bias}      Conv1D (4D, D)
    ln_f.{weight,bias}

Block: ``h = x + drop(c_proj(attn(ln_1(x))))``, ``h = h + drop(c_proj(gelu(c_fc(ln_2(h)))))``; causal attention
with scale ``head_dim ** -0.5``, q/k/v the thirds of c_attn's output, heads split from each third; attention
dropout on the weights. Before the blocks the embeddings get GPT-2's embedding dropout (the zero position term
adds nothing); after them ``ln_f``. No attention mask besides causality (DLAS passes none). Init as HF GPT-2:
Conv1D weights N(0, 0.02), biases 0, both ``c_proj`` weights N(0, 0.02 / sqrt(2 layers)), LayerNorms 1/0.

Incremental decoding: ``GPT2.forward(..., cache=KVCache(layers))`` keeps each block's projected keys and values
(after any LoRA on ``c_attn``), so later calls feed only the new positions. Positions are the caller's business
(UnifiedVoice adds learned position rows to the embeddings). Training passes no cache and runs as without one.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers.pytorch_utils import Conv1D as HFConv1D

INIT_STD = 0.02
LN_EPS = 1e-5


class Conv1D(HFConv1D):
    """HF GPT-2's linear layer: ``weight`` is (in, out), ``forward(x) = x @ weight + bias``. It is transformers'
    own ``Conv1D`` (so PEFT's LoRA wraps it with ``fan_in_fan_out``), built with (in, out) arguments."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__(n_out, n_in)
        with torch.no_grad():
            nn.init.normal_(self.weight, std=INIT_STD)
            self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.t(), self.bias)


class KVCache:
    """Keys and values (B, heads, P, head_dim) of every block for the P positions seen; ``len()`` = P."""

    def __init__(self, layers: int) -> None:
        self.keys: list[torch.Tensor | None] = [None] * layers
        self.values: list[torch.Tensor | None] = [None] * layers

    def __len__(self) -> int:
        return self.length(0)

    def length(self, layer: int) -> int:
        """Positions block ``layer`` holds (0 before the first call)."""
        keys = self.keys[layer]
        return 0 if keys is None else keys.shape[2]

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append block ``layer``'s new (B, heads, T, head_dim) keys and values; returns all of them."""
        if self.keys[layer] is not None:
            k, v = torch.cat([self.keys[layer], k], dim=2), torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v


class Attention(nn.Module):
    """Causal multi-head self-attention (``c_attn``, ``c_proj``)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.c_attn = Conv1D(dim, 3 * dim)
        self.c_proj = Conv1D(dim, dim)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in self.c_attn(x).split(d, dim=2))
        past = 0
        if cache is not None:
            past = cache.length(layer)
            k, v = cache.extend(layer, k, v)
        p = self.dropout if self.training else 0.0
        if past == 0:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:  # new query i sits at past + i: it sees keys 0 .. past + i (all of them for one new position)
            idx = torch.arange(past + t, device=x.device)
            mask = None if t == 1 else (idx[None, :] <= past + torch.arange(t, device=x.device)[:, None])
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.resid_dropout(self.c_proj(out.transpose(1, 2).reshape(b, t, d)))


class MLP(nn.Module):
    """``c_fc`` → gelu_new → ``c_proj`` → dropout."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.c_fc = Conv1D(dim, 4 * dim)
        self.c_proj = Conv1D(4 * dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    """One pre-LN GPT-2 block."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, heads, dropout)
        self.ln_2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = MLP(dim, dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT2(nn.Module):
    """GPT-2 fed ``inputs_embeds`` (B, T, D) → last hidden state (B, T, D); ``n_positions`` caps T as GPT-2's
    causal mask does. ``cache`` (:class:`KVCache`, inference): the earlier positions' keys and values, which these
    T positions follow (the cap then counts them too)."""

    def __init__(self, layers: int, dim: int, heads: int, n_positions: int, dropout: float = 0.1,
                 checkpointing: bool = False) -> None:
        super().__init__()
        self.n_positions, self.checkpointing = n_positions, checkpointing
        self.drop = nn.Dropout(dropout)
        self.h = nn.ModuleList(Block(dim, heads, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim, eps=LN_EPS)
        std = INIT_STD / math.sqrt(2 * layers)
        for block in self.h:
            nn.init.normal_(block.attn.c_proj.weight, std=std)
            nn.init.normal_(block.mlp.c_proj.weight, std=std)

    def forward(self, inputs_embeds: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        length = inputs_embeds.size(1) + (0 if cache is None else len(cache))
        if length > self.n_positions:
            raise ValueError(f"a sequence of {length} positions is longer than the model's context "
                             f"of {self.n_positions} (n_positions)")
        x = self.drop(inputs_embeds)
        grad_ckpt = self.checkpointing and self.training and torch.is_grad_enabled()
        for i, block in enumerate(self.h):
            if cache is not None:
                x = block(x, cache, i)
            else:
                x = checkpoint(block, x, use_reentrant=False) if grad_ckpt else block(x)
        return self.ln_f(x)
