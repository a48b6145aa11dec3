"""The FSQ link between the DiT and the 5 Hz LM: tokenizer (25 Hz latents -> codes) and detokenizer (codes ->
25 Hz "LM hints", which replace the source latents of the context for cover tasks).

- ``tokenizer``: ``audio_acoustic_proj`` Linear(64 -> enc_H) -> groups of ``pool_window_size`` (5) frames (the
  latents zero-padded at the end to a whole group) -> ``attention_pooler`` (``embed_tokens``, the CLS
  ``special_token`` prepended, layers, ``norm``, position 0) -> ``quantizer`` (:class:`ResidualFSQ`).
- ``detokenizer``: ``embed_tokens`` on the quantized vectors, each repeated 5 times plus ``special_tokens``
  (1, 5, enc_H), layers within each group, ``norm``, ``proj_out`` Linear(enc_H -> 64).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .dit_config import DiTConfig
from .dit_layers import EncoderStack
from .fsq import ResidualFSQ


class AttentionPooler(EncoderStack):
    """``(B, G, W, enc_H)`` groups -> ``(B, G, enc_H)``: one CLS token per group, read after the layers."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__(config, config.num_attention_pooler_hidden_layers, config.enc_hidden)
        self.special_token = nn.Parameter(torch.randn(1, 1, config.enc_hidden))

    def forward(self, groups: torch.Tensor) -> torch.Tensor:
        b, g, w, h = groups.shape
        x = self.embed_tokens(groups.reshape(b * g, w, h))
        x = torch.cat((self.special_token.expand(b * g, -1, -1).to(x.dtype), x), dim=1)
        return self.run(x)[:, 0].view(b, g, h)


class AceStepAudioTokenizer(nn.Module):
    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.window = config.pool_window_size
        self.audio_acoustic_proj = nn.Linear(config.audio_acoustic_hidden_dim, config.enc_hidden)
        self.attention_pooler = AttentionPooler(config)
        self.quantizer = ResidualFSQ(config.fsq_dim, config.fsq_input_levels, config.fsq_input_num_quantizers)

    def forward(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T, 64)`` latents -> ``(quantized (B, ceil(T/5), enc_H), indices (B, ceil(T/5), Q))``."""
        pad = (-latents.shape[1]) % self.window
        if pad:
            latents = F.pad(latents, (0, 0, 0, pad))
        x = self.audio_acoustic_proj(latents)
        b, t, h = x.shape
        pooled = self.attention_pooler(x.view(b, t // self.window, self.window, h))
        return self.quantizer(pooled)


class AudioTokenDetokenizer(EncoderStack):
    def __init__(self, config: DiTConfig) -> None:
        super().__init__(config, config.num_attention_pooler_hidden_layers, config.enc_hidden)
        self.window = config.pool_window_size
        self.special_tokens = nn.Parameter(torch.randn(1, self.window, config.enc_hidden))
        self.proj_out = nn.Linear(config.enc_hidden, config.audio_acoustic_hidden_dim)

    def forward(self, quantized: torch.Tensor) -> torch.Tensor:
        """``(B, G, enc_H)`` -> ``(B, G * 5, 64)``."""
        b, g, h = quantized.shape
        x = self.embed_tokens(quantized)[:, :, None].expand(-1, -1, self.window, -1)
        x = (x + self.special_tokens[:, None].to(x.dtype)).reshape(b * g, self.window, h)
        return self.proj_out(self.run(x)).view(b, g * self.window, -1)
