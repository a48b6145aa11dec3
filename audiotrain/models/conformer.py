"""An ESPnet-style Conformer encoder: relative-position self-attention, pre-norm blocks, no convolution module.

Layout (state-dict names in brackets)::

    x (B, L, input_size) -> [embed.out] Linear -> LayerNorm(1e-5) -> Dropout
                         -> rel-pos encoding: x * sqrt(d), pos_emb (1, 2L-1, d) for relative
                            positions L-1 .. -(L-1), dropout on both
                         -> N x [encoders.i]: pre-norm blocks
                              x = x + drop(self_attn(norm_mha(x), pos_emb, mask))
                              x = x + drop(feed_forward(norm_ff(x)))      (Linear-SiLU-Dropout-Linear)
                         -> [after_norm] LayerNorm(1e-5)

Attention parameters are ``encoders.i.self_attn.{linear_q,linear_k,linear_v,linear_out}`` (with bias),
``linear_pos`` (no bias) and ``pos_bias_u`` / ``pos_bias_v`` of shape ``(heads, d / heads)``; the feed-forward is
``encoders.i.feed_forward.{w_1,w_2}``.

Relative attention (Transformer-XL): ``scores = ((q + u) k^T + rel_shift((q + v) p^T)) / sqrt(d_k)`` where
``p = linear_pos(pos_emb)`` and ``rel_shift`` picks, for query ``i`` and key ``j``, the column of relative
position ``i - j``. Padded keys are masked with ``-inf`` and the softmax output at those keys is set to 0 (so an
all-padded sequence yields zeros, not NaN). No macaron FFN, no convolution module, no subsampling; the mask is
a full (non-causal) padding mask.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class RelPositionalEncoding(nn.Module):
    """ESPnet "new" relative positional encoding (positive and negative offsets).

    ``forward(x (B, L, d))`` returns ``(dropout(x * sqrt(d)), dropout(pos_emb (1, 2L-1, d)))``; row ``r`` of
    ``pos_emb`` encodes relative position ``L-1-r``. The table is a plain attribute (not a buffer, not in the
    state dict) built for ``max_len`` and extended on demand.
    """

    def __init__(self, d_model: int, dropout_rate: float, max_len: int = 5000) -> None:
        super().__init__()
        self.d_model = d_model
        self.xscale = math.sqrt(d_model)
        self.dropout = nn.Dropout(dropout_rate)
        self.max_len = max_len
        self.pe: torch.Tensor | None = None
        self._extend(max_len, torch.device("cpu"), torch.float32)

    def _extend(self, length: int, device: torch.device, dtype: torch.dtype) -> None:
        pe = self.pe
        if pe is not None and not pe.is_meta and pe.size(1) >= 2 * length - 1:
            if pe.dtype != dtype or pe.device != device:
                self.pe = pe.to(device=device, dtype=dtype)
            return
        length = max(length, self.max_len)
        position = torch.arange(length, dtype=torch.float32, device="cpu").unsqueeze(1)
        div_term = torch.exp(
            torch.arange(0, self.d_model, 2, dtype=torch.float32, device="cpu") * -(math.log(10000.0) / self.d_model)
        )
        positive = torch.zeros(length, self.d_model, device="cpu")
        negative = torch.zeros(length, self.d_model, device="cpu")
        positive[:, 0::2] = torch.sin(position * div_term)
        positive[:, 1::2] = torch.cos(position * div_term)
        negative[:, 0::2] = torch.sin(-position * div_term)
        negative[:, 1::2] = torch.cos(-position * div_term)
        # rows: +(length-1), ..., +1, 0, -1, ..., -(length-1)
        table = torch.cat([torch.flip(positive, [0]), negative[1:]], dim=0).unsqueeze(0)
        self.pe = table.to(device=device, dtype=dtype)

    def position_encoding(self, size: int) -> torch.Tensor:
        """``(1, 2*size-1, d)``: relative positions ``size-1 .. -(size-1)``."""
        assert self.pe is not None
        center = self.pe.size(1) // 2
        return self.pe[:, center - size + 1 : center + size]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._extend(x.size(1), x.device, x.dtype)
        pos_emb = self.position_encoding(x.size(1))
        return self.dropout(x * self.xscale), self.dropout(pos_emb)


class LinearInput(nn.Module):
    """Input layer: ``out`` = Linear -> LayerNorm(eps 1e-5) -> Dropout, then the rel-pos encoding."""

    def __init__(self, idim: int, odim: int, dropout_rate: float, pos_dropout_rate: float) -> None:
        super().__init__()
        self.out = nn.Sequential(nn.Linear(idim, odim), nn.LayerNorm(odim, eps=1e-5), nn.Dropout(dropout_rate))
        self.pos_enc = RelPositionalEncoding(odim, pos_dropout_rate)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pos_enc(self.out(x))


def rel_shift(x: torch.Tensor) -> torch.Tensor:
    """``(B, H, T, 2T-1)`` → ``(B, H, T, T)`` with ``out[..., i, j] = x[..., i, T-1-i+j]``.

    Column ``T-1-i+j`` of the positional scores holds relative position ``i - j``.
    """
    t = x.size(-2)
    i = torch.arange(t, device=x.device)[:, None]
    j = torch.arange(t, device=x.device)[None, :]
    index = (t - 1 - i + j).expand(*x.shape[:-1], t)
    return torch.gather(x, -1, index)


class RelPositionMultiHeadedAttention(nn.Module):
    """Multi-head self-attention with Transformer-XL relative positions.

    Parameters: ``linear_q/k/v/out`` (with bias), ``linear_pos`` (no bias), ``pos_bias_u`` and ``pos_bias_v``
    of shape ``(H, d_k)``. ``forward(x (B, T, d), mask (B, 1, T) bool, pos_emb (1, 2T-1, d))`` → ``(B, T, d)``.
    """

    def __init__(self, n_head: int, n_feat: int, dropout_rate: float) -> None:
        super().__init__()
        if n_feat % n_head:
            raise ValueError(f"{n_feat=} not divisible by {n_head=}")
        self.h = n_head
        self.d_k = n_feat // n_head
        self.linear_q = nn.Linear(n_feat, n_feat)
        self.linear_k = nn.Linear(n_feat, n_feat)
        self.linear_v = nn.Linear(n_feat, n_feat)
        self.linear_out = nn.Linear(n_feat, n_feat)
        self.dropout = nn.Dropout(dropout_rate)
        self.linear_pos = nn.Linear(n_feat, n_feat, bias=False)
        self.pos_bias_u = nn.Parameter(torch.empty(n_head, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.empty(n_head, self.d_k))
        nn.init.xavier_uniform_(self.pos_bias_u)
        nn.init.xavier_uniform_(self.pos_bias_v)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, pos_emb: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.linear_q(x).view(b, t, self.h, self.d_k)  # (B, T, H, dk)
        k = self.linear_k(x).view(b, t, self.h, self.d_k).transpose(1, 2)  # (B, H, T, dk)
        v = self.linear_v(x).view(b, t, self.h, self.d_k).transpose(1, 2)
        p = self.linear_pos(pos_emb).view(pos_emb.size(0), -1, self.h, self.d_k).transpose(1, 2)  # (1, H, 2T-1, dk)

        q_u = (q + self.pos_bias_u).transpose(1, 2)  # (B, H, T, dk)
        q_v = (q + self.pos_bias_v).transpose(1, 2)
        matrix_ac = torch.matmul(q_u, k.transpose(-2, -1))  # (B, H, T, T)
        matrix_bd = rel_shift(torch.matmul(q_v, p.transpose(-2, -1)))  # (B, H, T, T)
        scores = (matrix_ac + matrix_bd) / math.sqrt(self.d_k)

        masked = ~mask.unsqueeze(1)  # (B, 1, 1, T): True where the key is padding
        scores = scores.masked_fill(masked, float("-inf"))
        attn = torch.softmax(scores, dim=-1).masked_fill(masked, 0.0)
        out = torch.matmul(self.dropout(attn), v)  # (B, H, T, dk)
        out = out.transpose(1, 2).reshape(b, t, self.h * self.d_k)
        return self.linear_out(out)


class PositionwiseFeedForward(nn.Module):
    """``w_2(dropout(SiLU(w_1(x))))``."""

    def __init__(self, idim: int, hidden_units: int, dropout_rate: float) -> None:
        super().__init__()
        self.w_1 = nn.Linear(idim, hidden_units)
        self.activation = nn.SiLU()
        self.dropout = nn.Dropout(dropout_rate)
        self.w_2 = nn.Linear(hidden_units, idim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(self.dropout(self.activation(self.w_1(x))))


class ConformerEncoderLayer(nn.Module):
    """Pre-norm block: rel-pos MHA then FFN, each with residual dropout (no conv, no macaron)."""

    def __init__(self, size: int, heads: int, linear_units: int, dropout_rate: float,
                 attention_dropout_rate: float) -> None:
        super().__init__()
        self.self_attn = RelPositionMultiHeadedAttention(heads, size, attention_dropout_rate)
        self.feed_forward = PositionwiseFeedForward(size, linear_units, dropout_rate)
        self.norm_ff = nn.LayerNorm(size, eps=1e-5)
        self.norm_mha = nn.LayerNorm(size, eps=1e-5)
        self.dropout = nn.Dropout(dropout_rate)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, pos_emb: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.self_attn(self.norm_mha(x), mask, pos_emb))
        x = x + self.dropout(self.feed_forward(self.norm_ff(x)))
        return x


class ConformerEncoder(nn.Module):
    """The encoder: linear input layer, ``num_blocks`` pre-norm rel-pos blocks, final LayerNorm.

    Args:
        input_size: width of the input features.
        output_size: model width ``d``.
        attention_heads: heads, ``d_k = d / heads``.
        linear_units: FFN width.
        num_blocks: number of encoder layers.
        dropout_rate / positional_dropout_rate / attention_dropout_rate: residual and input-layer dropout,
            dropout on the scaled input and the positional table, dropout on the attention weights.

    ``forward(xs (B, L, input_size), pad_mask (B, L) with 1 = valid)`` returns ``(out (B, L, d), mask (B, 1, L)
    bool)``. Set ``gradient_checkpointing = True`` to recompute each block in backward while training.
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        attention_heads: int,
        linear_units: int,
        num_blocks: int,
        dropout_rate: float = 0.1,
        positional_dropout_rate: float = 0.1,
        attention_dropout_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.embed = LinearInput(input_size, output_size, dropout_rate, positional_dropout_rate)
        self.encoders = nn.ModuleList(
            ConformerEncoderLayer(output_size, attention_heads, linear_units, dropout_rate, attention_dropout_rate)
            for _ in range(num_blocks)
        )
        self.after_norm = nn.LayerNorm(output_size, eps=1e-5)
        self.gradient_checkpointing = False

    def forward(self, xs: torch.Tensor, pad_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = (pad_mask > 0).unsqueeze(1)  # (B, 1, L)
        xs, pos_emb = self.embed(xs)
        use_ckpt = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.encoders:
            if use_ckpt:
                xs = checkpoint(layer, xs, mask, pos_emb, use_reentrant=False)
            else:
                xs = layer(xs, mask, pos_emb)
        return self.after_norm(xs), mask
