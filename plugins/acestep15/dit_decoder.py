"""The flow-matching decoder of ACE-Step 1.5 (``AceStepDiTModel``): the part LoRA trains.

``forward(hidden_states (B, T, 64), timestep (B,), timestep_r (B,), encoder_hidden_states (B, S, enc_H),
context_latents (B, T, 128), attention_mask (B, T) | None, encoder_attention_mask (B, S) | None)`` -> the
velocity ``(B, T, 64)`` at 25 Hz:

1. ``[context ‖ xt]`` (192 channels, context first), zero-padded to an even T, ``proj_in`` = Conv1d(192 -> H,
   kernel 2, stride 2) gives tokens at 12.5 Hz (state-dict key ``proj_in.1``; ``.0``/``.2`` are transposes).
2. ``time_embed(t) + time_embed_r(t - r)`` (temb and the six modulation vectors, summed); r = t in training.
3. ``condition_embedder`` Linear(enc_H -> H) on the packed encoder states.
4. ``layers`` (:class:`AceStepDiTLayer`), sliding-window self-attention on even layers.
5. ``norm_out`` modulated by ``scale_shift_table + temb`` (shift, scale), ``proj_out`` = ConvTranspose1d(H -> 64,
   kernel 2, stride 2) (key ``proj_out.1``), cropped to T.

Unlike the released forward (which drops both masks), padding is masked: frames outside ``attention_mask`` are
zeroed at the input, no token attends to a padded token or to a padded encoder position, and the velocity is
zero on padded frames. A padded batch therefore gives each item what it gives alone, and with no padding the
masks are None, so the computation is exactly the unmasked one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .dit_attention import RMSNorm, cross_attention_mask, rope_tables, self_attention_mask
from .dit_config import DiTConfig
from .dit_layers import AceStepDiTLayer, TimestepEmbedding


class Transpose(nn.Module):
    """``(B, A, C) -> (B, C, A)``: the parameterless ends of ``proj_in`` / ``proj_out``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


def token_mask(attention_mask: torch.Tensor | None, patch: int) -> torch.Tensor | None:
    """Frame mask ``(B, T)`` -> token mask ``(B, ceil(T/patch))``: a token is valid when any of its frames is."""
    if attention_mask is None:
        return None
    m = attention_mask.to(torch.bool)
    pad = (-m.shape[1]) % patch
    if pad:
        m = F.pad(m, (0, pad), value=False)
    return m.view(m.shape[0], -1, patch).any(-1)


class AceStepDiTModel(nn.Module):
    """The decoder (see the module doc). ``gradient_checkpointing = True`` recomputes each layer in backward."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = config
        h, p = config.hidden_size, config.patch_size
        self.gradient_checkpointing = False
        self.scale_shift_table = nn.Parameter(torch.randn(1, 2, h) / h ** 0.5)
        self.layers = nn.ModuleList(AceStepDiTLayer(config, i) for i in range(config.num_hidden_layers))
        self.proj_in = nn.Sequential(Transpose(), nn.Conv1d(config.in_channels, h, p, stride=p), Transpose())
        self.time_embed = TimestepEmbedding(h)
        self.time_embed_r = TimestepEmbedding(h)
        self.condition_embedder = nn.Linear(config.enc_hidden, h)
        self.norm_out = RMSNorm(h, config.rms_norm_eps)
        self.proj_out = nn.Sequential(Transpose(), nn.ConvTranspose1d(h, config.audio_acoustic_hidden_dim, p,
                                                                      stride=p), Transpose())

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, timestep_r: torch.Tensor,
                encoder_hidden_states: torch.Tensor, context_latents: torch.Tensor,
                attention_mask: torch.Tensor | None = None,
                encoder_attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, _ = hidden_states.shape
        p = self.config.patch_size
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None
        x = torch.cat((context_latents.to(hidden_states.dtype), hidden_states), dim=-1)
        if attention_mask is not None:
            x = x * attention_mask[..., None].to(x.dtype)
        if t % p:
            x = F.pad(x, (0, 0, 0, p - t % p))
        x = self.proj_in(x)
        temb, proj = self.time_embed(timestep)
        temb_r, proj_r = self.time_embed_r(timestep - timestep_r)
        temb, proj = temb + temb_r, proj + proj_r
        enc = self.condition_embedder(encoder_hidden_states)

        tokens = x.shape[1]
        valid = token_mask(attention_mask, p)
        rope = rope_tables(tokens, self.config.head_dim, self.config.rope_theta, x.device)
        cross = cross_attention_mask(encoder_attention_mask, tokens)
        masks: dict[int | None, torch.Tensor | None] = {}
        for layer in self.layers:
            if layer.window not in masks:
                masks[layer.window] = self_attention_mask(valid, tokens, layer.window, x.device)
            args = (x, proj, rope, masks[layer.window], enc, cross)
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, *args, use_reentrant=False)
            else:
                x = layer(*args)

        shift, scale = (self.scale_shift_table + temb[:, None]).to(x.dtype).chunk(2, dim=1)
        x = self.norm_out(x) * (1 + scale) + shift
        out = self.proj_out(x)[:, :t]
        if attention_mask is not None:
            out = out * attention_mask[..., None].to(out.dtype)
        return out
