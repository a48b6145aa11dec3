"""The layers of the ACE-Step 1.5 DiT: SwiGLU MLP, timestep embedder, decoder layer, encoder layer.

Decoder layer (``AceStepDiTLayer``), for tokens ``x (B, T, H)`` and the timestep projection ``(B, 6, H)``::

    shift, scale, gate, mlp_shift, mlp_scale, mlp_gate = scale_shift_table + timestep_proj   # each (B, 1, H)
    x = x + gate * self_attn(self_attn_norm(x) * (1 + scale) + shift)       # RoPE, window on even layers
    x = x + cross_attn(cross_attn_norm(x), encoder_states)                   # plain residual
    x = x + mlp_gate * mlp(mlp_norm(x) * (1 + mlp_scale) + mlp_shift)       # SwiGLU

Encoder layer (lyric / timbre encoders, attention pooler, detokenizer): pre-norm,
``x + self_attn(input_layernorm(x))`` then ``x + mlp(post_attention_layernorm(x))``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .dit_attention import DiTAttention, RMSNorm, rope_tables, self_attention_mask
from .dit_config import DiTConfig

TIME_FREQ_DIM = 256
TIME_SCALE = 1000.0
MAX_PERIOD = 10_000.0


class SwiGLU(nn.Module):
    """``down_proj(silu(gate_proj(x)) * up_proj(x))``, no bias."""

    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def timestep_sinusoid(t: torch.Tensor, dim: int = TIME_FREQ_DIM) -> torch.Tensor:
    """``(B,)`` flow times in [0, 1] -> ``(B, dim)`` float32: ``t * 1000`` against ``dim/2`` frequencies
    ``max_period^(-i/(dim/2))``, cosines first, then sines."""
    half = dim // 2
    freqs = torch.exp(-math.log(MAX_PERIOD) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = (t.float() * TIME_SCALE)[:, None] * freqs[None]
    return torch.cat((torch.cos(args), torch.sin(args)), dim=-1)


class TimestepEmbedding(nn.Module):
    """``t -> temb (B, H)`` (sinusoid -> linear_1 -> SiLU -> linear_2) and ``time_proj(silu(temb))`` viewed as
    the six modulation vectors ``(B, 6, H)``."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(TIME_FREQ_DIM, hidden)
        self.linear_2 = nn.Linear(hidden, hidden)
        self.time_proj = nn.Linear(hidden, 6 * hidden)

    def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # the bias: a quantised base (model.quantize) holds linear_1.weight packed in uint8
        emb = timestep_sinusoid(t).to(self.linear_1.bias.dtype)
        temb = self.linear_2(F.silu(self.linear_1(emb)))
        proj = self.time_proj(F.silu(temb))
        return temb, proj.view(t.shape[0], 6, -1)


class AceStepDiTLayer(nn.Module):
    """One decoder layer (see the module doc); cross-attention k/v read the ``condition_embedder`` output."""

    def __init__(self, config: DiTConfig, index: int) -> None:
        super().__init__()
        h, eps = config.hidden_size, config.rms_norm_eps
        self.window = config.window_of(index)
        self.scale_shift_table = nn.Parameter(torch.randn(1, 6, h) / h ** 0.5)
        self.self_attn_norm = RMSNorm(h, eps)
        self.self_attn = DiTAttention(h, config.num_attention_heads, config.num_key_value_heads, config.head_dim,
                                      eps, config.attention_bias)
        self.cross_attn_norm = RMSNorm(h, eps)
        self.cross_attn = DiTAttention(h, config.num_attention_heads, config.num_key_value_heads, config.head_dim,
                                       eps, config.attention_bias, is_cross=True)
        self.mlp_norm = RMSNorm(h, eps)
        self.mlp = SwiGLU(h, config.intermediate_size)

    def forward(self, x: torch.Tensor, timestep_proj: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
                self_mask: torch.Tensor | None, encoder_states: torch.Tensor,
                cross_mask: torch.Tensor | None) -> torch.Tensor:
        mod = (self.scale_shift_table + timestep_proj).to(x.dtype)
        shift, scale, gate, mlp_shift, mlp_scale, mlp_gate = mod.chunk(6, dim=1)
        h = self.self_attn_norm(x) * (1 + scale) + shift
        x = x + gate * self.self_attn(h, self_mask, rope)
        x = x + self.cross_attn(self.cross_attn_norm(x), cross_mask, encoder_states=encoder_states)
        h = self.mlp_norm(x) * (1 + mlp_scale) + mlp_shift
        return x + mlp_gate * self.mlp(h)


class EncoderLayer(nn.Module):
    """A pre-norm bidirectional transformer layer at the encoder width (``config.enc_*`` sizes)."""

    def __init__(self, config: DiTConfig, index: int) -> None:
        super().__init__()
        h, eps = config.enc_hidden, config.rms_norm_eps
        self.window = config.window_of(index)
        self.self_attn = DiTAttention(h, config.enc_heads, config.enc_kv_heads, config.head_dim, eps,
                                      config.attention_bias)
        self.input_layernorm = RMSNorm(h, eps)
        self.post_attention_layernorm = RMSNorm(h, eps)
        self.mlp = SwiGLU(h, config.enc_intermediate)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None,
                rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), mask, rope)
        return x + self.mlp(self.post_attention_layernorm(x))


class EncoderStack(nn.Module):
    """``embed_tokens`` (Linear ``in_dim -> enc_hidden``, bias), ``layers`` (EncoderLayer × n) and ``norm``.
    ``run(x, valid)`` applies the layers then the norm to already embedded ``x``, with RoPE over positions
    ``0..T-1`` and the key-padding mask ``valid (B, T)`` (None: no padding)."""

    def __init__(self, config: DiTConfig, num_layers: int, in_dim: int) -> None:
        super().__init__()
        self.config = config
        self.gradient_checkpointing = False
        self.embed_tokens = nn.Linear(in_dim, config.enc_hidden)
        self.norm = RMSNorm(config.enc_hidden, config.rms_norm_eps)
        self.layers = nn.ModuleList(EncoderLayer(config, i) for i in range(num_layers))

    def run(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        t = x.shape[1]
        rope = rope_tables(t, self.config.head_dim, self.config.rope_theta, x.device)
        masks: dict[int | None, torch.Tensor | None] = {}
        for layer in self.layers:
            if layer.window not in masks:
                masks[layer.window] = self_attention_mask(valid, t, layer.window, x.device)
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, masks[layer.window], rope, use_reentrant=False)
            else:
                x = layer(x, masks[layer.window], rope)
        return self.norm(x)
