"""The condition encoder of ACE-Step 1.5 (``AceStepConditionEncoder``; frozen in LoRA training).

- ``text_projector``: Linear(text_hidden_dim -> enc_H, no bias) on the text encoder's last hidden state.
- ``lyric_encoder``: the lyric token-embedding rows (B, L, text_hidden_dim) -> ``embed_tokens`` -> 8 pre-norm
  bidirectional layers with RoPE (padding masked) -> ``norm``.
- ``timbre_encoder``: reference-audio latents (N, T, 64) -> ``embed_tokens`` -> [XL: ``special_token`` prepended]
  -> 4 layers -> ``norm`` -> position 0 of each reference, regrouped per batch item by ``refer_audio_order_mask``
  (N,) (the batch index each reference belongs to).
- The three are packed as ``[lyric, timbre, text]`` with every row's valid tokens first (stable order).
"""
from __future__ import annotations

import torch
from torch import nn

from .dit_config import DiTConfig
from .dit_layers import EncoderStack


def pack_sequences(first: torch.Tensor, first_mask: torch.Tensor, second: torch.Tensor,
                   second_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate two ``(B, L, H)`` sequences and their ``(B, L)`` masks along L, then stably move each row's
    valid tokens first. Returns ``(states (B, L1+L2, H), mask (B, L1+L2))`` (mask in ``first_mask``'s dtype)."""
    states = torch.cat((first, second), dim=1)
    mask = torch.cat((first_mask.to(torch.bool), second_mask.to(torch.bool)), dim=1)
    order = torch.argsort(mask.to(torch.int8), dim=1, descending=True, stable=True)
    states = torch.gather(states, 1, order[..., None].expand(-1, -1, states.shape[-1]))
    return states, torch.gather(mask, 1, order).to(first_mask.dtype)


def group_by_item(per_reference: torch.Tensor, order: torch.Tensor,
                  batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, H)`` embeddings and ``order (N,)`` (batch index of each) -> ``(B, R, H)`` with R the most references
    of any item (at least 1), in their order, and the mask ``(B, R)``; an item without references gets one
    all-zero, masked slot."""
    order = order.to(torch.long)
    counts = torch.bincount(order, minlength=batch) if order.numel() else torch.zeros(batch, dtype=torch.long)
    slots = max(int(counts.max()) if counts.numel() else 0, 1)
    out = per_reference.new_zeros(batch, slots, per_reference.shape[-1])
    mask = torch.zeros(batch, slots, dtype=torch.long, device=per_reference.device)
    rank = torch.zeros_like(order)
    for i in range(order.numel()):  # N is small (references per batch)
        rank[i] = int((order[:i] == order[i]).sum())
    out[order, rank] = per_reference
    mask[order, rank] = 1
    return out, mask


class LyricEncoder(EncoderStack):
    def __init__(self, config: DiTConfig) -> None:
        super().__init__(config, config.num_lyric_encoder_hidden_layers, config.text_hidden_dim)

    def forward(self, lyric_hidden_states: torch.Tensor, lyric_attention_mask: torch.Tensor | None) -> torch.Tensor:
        return self.run(self.embed_tokens(lyric_hidden_states), lyric_attention_mask)


class TimbreEncoder(EncoderStack):
    def __init__(self, config: DiTConfig) -> None:
        super().__init__(config, config.num_timbre_encoder_hidden_layers, config.timbre_hidden_dim)
        self.special_token = nn.Parameter(torch.randn(1, 1, config.enc_hidden))
        self.prepend_cls = bool(config.timbre_prepend_cls)

    def forward(self, refer_audio: torch.Tensor, refer_audio_order_mask: torch.Tensor,
                batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, T, 64)`` references -> ``(B, R, enc_H)`` timbre tokens and their mask ``(B, R)``."""
        x = self.embed_tokens(refer_audio)
        if self.prepend_cls:
            x = torch.cat((self.special_token.expand(x.shape[0], -1, -1).to(x.dtype), x), dim=1)
        x = self.run(x)[:, 0]
        return group_by_item(x, refer_audio_order_mask, batch)


class AceStepConditionEncoder(nn.Module):
    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = config
        self.text_projector = nn.Linear(config.text_hidden_dim, config.enc_hidden, bias=False)
        self.lyric_encoder = LyricEncoder(config)
        self.timbre_encoder = TimbreEncoder(config)

    def forward(self, text_hidden_states: torch.Tensor, text_attention_mask: torch.Tensor,
                lyric_hidden_states: torch.Tensor, lyric_attention_mask: torch.Tensor,
                refer_audio: torch.Tensor, refer_audio_order_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the packed ``encoder_hidden_states (B, L_lyric + R + L_text, enc_H)`` and their mask."""
        batch = text_hidden_states.shape[0]
        text = self.text_projector(text_hidden_states)
        lyric = self.lyric_encoder(lyric_hidden_states, lyric_attention_mask)
        timbre, timbre_mask = self.timbre_encoder(refer_audio, refer_audio_order_mask, batch)
        states, mask = pack_sequences(lyric, lyric_attention_mask, timbre.to(lyric.dtype), timbre_mask)
        return pack_sequences(states, mask, text, text_attention_mask)
