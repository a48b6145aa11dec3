"""ACE-Step attention: the ``Attention`` module and its two processors.

Module layout (matches the released state dict):

* self-attention: ``to_q``, ``to_k``, ``to_v`` (with bias), ``to_out`` = ``[Linear, Dropout]``
  (key ``to_out.0``);
* cross-attention additionally holds ``add_q_proj``, ``add_k_proj``, ``add_v_proj`` and
  ``to_add_out`` (all ``dim -> dim`` with bias). They are present in the checkpoint but are not
  used by the forward pass.

Processors:

* :class:`LinearSelfAttnProcessor` — ReLU-kernel linear attention (RoPE, then ReLU on q and k,
  padded positions zeroed in q, k, v, all in float32):
  ``out_s = sum_t v_t (k_t . q_s) / (sum_t k_t . q_s + 1e-15)`` per head.
* :class:`CrossAttnProcessor` — softmax attention (SDPA) from latent queries to encoder keys,
  RoPE on q (latent positions) and on k (encoder positions ``0..L-1``), masked by
  ``outer(latent_mask, encoder_mask)``; query rows with no valid key produce zeros.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .rope import apply_rotary_emb

FreqsCis = tuple[torch.Tensor, torch.Tensor]

LINEAR_ATTN_EPS = 1e-15


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``(B, T, H*D)`` → ``(B, H, T, D)``."""
    b, t, _ = x.shape
    return x.view(b, t, heads, -1).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """``(B, H, T, D)`` → ``(B, T, H*D)``."""
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = LINEAR_ATTN_EPS) -> torch.Tensor:
    """Kernelised attention on already non-negative ``q, k`` of shape ``(B, H, T, D)``.

    Returns ``(B, H, T, Dv)``: ``out_s = (sum_t v_t (k_t . q_s)) / (sum_t k_t . q_s + eps)``.
    """
    kv = torch.einsum("bhtd,bhte->bhde", k, v)
    numerator = torch.einsum("bhsd,bhde->bhse", q, kv)
    denominator = torch.einsum("bhsd,bhd->bhs", q, k.sum(dim=2))
    return numerator / (denominator.unsqueeze(-1) + eps)


class LinearSelfAttnProcessor:
    """Linear self-attention over latent tokens (ACE-Step's ``attn``)."""

    def __call__(
        self,
        attn: "Attention",
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        rotary_freqs_cis: FreqsCis | None = None,
        **_: object,
    ) -> torch.Tensor:
        """``hidden_states (B, T, C)``, ``attention_mask (B, T)`` (1 = valid) → ``(B, T, C)``."""
        dtype = hidden_states.dtype
        q = _heads(attn.to_q(hidden_states), attn.heads)
        k = _heads(attn.to_k(hidden_states), attn.heads)
        v = _heads(attn.to_v(hidden_states), attn.heads)
        if rotary_freqs_cis is not None:
            q = apply_rotary_emb(q, rotary_freqs_cis)
            k = apply_rotary_emb(k, rotary_freqs_cis)
        q = F.relu(q.float())
        k = F.relu(k.float())
        v = v.float()
        if attention_mask is not None:
            m = attention_mask.to(torch.float32)[:, None, :, None]
            q, k, v = q * m, k * m, v * m
        out = linear_attention(q, k, v).to(dtype)
        out = attn.to_out[0](_merge(out))
        return attn.to_out[1](out)


class CrossAttnProcessor:
    """Softmax cross-attention from latent tokens to the condition sequence (``cross_attn``)."""

    def __call__(
        self,
        attn: "Attention",
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        rotary_freqs_cis: FreqsCis | None = None,
        rotary_freqs_cis_cross: FreqsCis | None = None,
        **_: object,
    ) -> torch.Tensor:
        """``hidden_states (B, T, C)``, ``encoder_hidden_states (B, L, C)``, masks ``(B, T)`` and
        ``(B, L)`` (1 = valid) → ``(B, T, C)``. Rows whose every key is masked give zeros
        before ``to_out``."""
        b, t, _ = hidden_states.shape
        l_enc = encoder_hidden_states.shape[1]
        q = _heads(attn.to_q(hidden_states), attn.heads)
        k = _heads(attn.to_k(encoder_hidden_states), attn.heads)
        v = _heads(attn.to_v(encoder_hidden_states), attn.heads)
        if rotary_freqs_cis is not None:
            q = apply_rotary_emb(q, rotary_freqs_cis)
        if rotary_freqs_cis_cross is not None:
            k = apply_rotary_emb(k, rotary_freqs_cis_cross)

        row_valid = None
        mask = None
        if attention_mask is not None or encoder_attention_mask is not None:
            device = hidden_states.device
            lat = attention_mask > 0 if attention_mask is not None else torch.ones(b, t, dtype=torch.bool, device=device)
            enc = (
                encoder_attention_mask > 0
                if encoder_attention_mask is not None
                else torch.ones(b, l_enc, dtype=torch.bool, device=device)
            )
            allowed = lat[:, :, None] & enc[:, None, :]  # (B, T, L)
            row_valid = allowed.any(dim=-1)  # (B, T)
            # A fully masked row would give NaN; let it attend everywhere, then zero it.
            allowed = allowed | ~row_valid[:, :, None]
            mask = allowed[:, None]  # (B, 1, T, L)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)
        out = _merge(out)
        if row_valid is not None:
            out = out * row_valid[:, :, None].to(out.dtype)
        out = attn.to_out[0](out)
        return attn.to_out[1](out)


#: cross-attention projections present in the released weights that the forward pass never reads
UNUSED_CROSS_ATTENTION = ("add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")


class Attention(nn.Module):
    """Multi-head attention with diffusers-compatible parameter names.

    Args:
        query_dim: model width ``C`` (= ``heads * dim_head`` in ACE-Step).
        heads: number of heads ``H``.
        dim_head: per-head width ``D``.
        cross_attention: build the cross-attention variant (extra ``add_*`` projections,
            :class:`CrossAttnProcessor`); otherwise linear self-attention.
        dropout: dropout after the output projection.

    ``forward(hidden_states, encoder_hidden_states=None, attention_mask=None,
    encoder_attention_mask=None, rotary_freqs_cis=None, rotary_freqs_cis_cross=None)``
    returns ``(B, T, C)``.
    """

    def __init__(self, query_dim: int, heads: int, dim_head: int, cross_attention: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.dim_head = dim_head
        self.is_cross_attention = cross_attention
        self.to_q = nn.Linear(query_dim, inner, bias=True)
        self.to_k = nn.Linear(query_dim, inner, bias=True)
        self.to_v = nn.Linear(query_dim, inner, bias=True)
        if cross_attention:
            # Present in the released weights; unused by the forward pass.
            self.add_k_proj = nn.Linear(query_dim, inner, bias=True)
            self.add_v_proj = nn.Linear(query_dim, inner, bias=True)
            self.add_q_proj = nn.Linear(query_dim, inner, bias=True)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim, bias=True), nn.Dropout(dropout)])
        if cross_attention:
            self.to_add_out = nn.Linear(inner, query_dim, bias=True)
        self.processor = CrossAttnProcessor() if cross_attention else LinearSelfAttnProcessor()

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        rotary_freqs_cis: FreqsCis | None = None,
        rotary_freqs_cis_cross: FreqsCis | None = None,
    ) -> torch.Tensor:
        if self.is_cross_attention and encoder_hidden_states is None:
            raise ValueError("cross-attention needs encoder_hidden_states")
        return self.processor(
            self,
            hidden_states,
            encoder_hidden_states=encoder_hidden_states,
            attention_mask=attention_mask,
            encoder_attention_mask=encoder_attention_mask,
            rotary_freqs_cis=rotary_freqs_cis,
            rotary_freqs_cis_cross=rotary_freqs_cis_cross,
        )
