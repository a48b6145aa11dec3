"""ACE-Step's ``LinearTransformerBlock`` (Sana-style adaLN-single) and its ``GLUMBConv`` MLP.

Block, for tokens ``x (B, T, C)`` and the timestep modulation ``temb (B, 6*C)``::

    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = scale_shift_table + temb.view(B, 6, C)
    x = x + gate_msa * attn(rms(x) * (1 + scale_msa) + shift_msa)        # linear self-attention
    x = x + cross_attn(x, encoder_hidden_states)                       # no norm, no gate
    x = x + gate_mlp * ff(rms(x) * (1 + scale_mlp) + shift_mlp)         # GLUMBConv
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import Attention, FreqsCis


def rms_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm over the last dim, no affine; computed in float32 and cast back."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)
    return xf.to(x.dtype)


class RMSNorm(nn.Module):
    """Parameter-free RMSNorm (``elementwise_affine=False``)."""

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.eps)


class ConvLayer(nn.Module):
    """A ``Conv1d`` held as ``.conv`` (state-dict key ``<name>.conv``) plus an optional activation."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, groups: int = 1, bias: bool = True, act: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, groups=groups, bias=bias)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class GLUMBConv(nn.Module):
    """Gated inverted-bottleneck conv MLP over time.

    ``(B, T, C)`` → 1×1 conv ``C -> 2h`` + SiLU → depthwise conv k3 (``2h`` groups) →
    split ``[x, gate]`` → ``x * SiLU(gate)`` → 1×1 conv ``h -> C`` (no bias) → ``(B, T, C)``,
    with ``h = int(C * mlp_ratio)``.
    """

    def __init__(self, dim: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.hidden = hidden
        self.inverted_conv = ConvLayer(dim, hidden * 2, 1, bias=True, act=True)
        self.depth_conv = ConvLayer(hidden * 2, hidden * 2, 3, groups=hidden * 2, bias=True, act=False)
        self.point_conv = ConvLayer(hidden, dim, 1, bias=False, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.transpose(1, 2)
        h = self.inverted_conv(h)
        h = self.depth_conv(h)
        h, gate = torch.chunk(h, 2, dim=1)
        h = h * F.silu(gate)
        h = self.point_conv(h)
        return h.transpose(1, 2)


class LinearTransformerBlock(nn.Module):
    """One ACE-Step transformer block.

    Args:
        dim: model width ``C``.
        num_attention_heads / attention_head_dim: attention geometry (``C = H * D``).
        mlp_ratio: GLUMBConv expansion.
        add_cross_attention: build ``cross_attn`` (always on in ACE-Step).

    ``forward(hidden_states (B, T, C), encoder_hidden_states (B, L, C), temb (B, 6C),
    attention_mask (B, T), encoder_attention_mask (B, L), rotary_freqs_cis, rotary_freqs_cis_cross)``
    returns ``(B, T, C)``.
    """

    def __init__(
        self,
        dim: int,
        num_attention_heads: int,
        attention_head_dim: int,
        mlp_ratio: float = 4.0,
        add_cross_attention: bool = True,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.norm1 = RMSNorm(1e-6)
        self.attn = Attention(dim, num_attention_heads, attention_head_dim, cross_attention=False)
        self.add_cross_attention = add_cross_attention
        if add_cross_attention:
            self.cross_attn = Attention(dim, num_attention_heads, attention_head_dim, cross_attention=True)
        self.norm2 = RMSNorm(1e-6)
        self.ff = GLUMBConv(dim, mlp_ratio)
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim**0.5)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None,
        temb: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        rotary_freqs_cis: FreqsCis | None = None,
        rotary_freqs_cis_cross: FreqsCis | None = None,
    ) -> torch.Tensor:
        b = hidden_states.shape[0]
        mod = self.scale_shift_table[None] + temb.reshape(b, 6, -1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=1)

        h = self.norm1(hidden_states) * (1 + scale_msa) + shift_msa
        h = self.attn(h, attention_mask=attention_mask, rotary_freqs_cis=rotary_freqs_cis)
        hidden_states = hidden_states + gate_msa * h

        if self.add_cross_attention:
            h = self.cross_attn(
                hidden_states,
                encoder_hidden_states=encoder_hidden_states,
                attention_mask=attention_mask,
                encoder_attention_mask=encoder_attention_mask,
                rotary_freqs_cis=rotary_freqs_cis,
                rotary_freqs_cis_cross=rotary_freqs_cis_cross,
            )
            hidden_states = hidden_states + h

        h = self.norm2(hidden_states) * (1 + scale_mlp) + shift_mlp
        hidden_states = hidden_states + gate_mlp * self.ff(h)
        return hidden_states
