"""``AceStepConditionGenerationModel``: the ACE-Step 1.5 DiT folder's whole model, with the released layout
(``null_condition_emb``, ``decoder``, ``encoder``, ``tokenizer``, ``detokenizer``).

The training objective lives in :mod:`.objective` and the samplers in :mod:`.sampling`; this module holds the
network and the small steps around it (encoding the conditions, the cover-task context, the CFG null states).
"""
from __future__ import annotations

import torch
from torch import nn

from .audio_tokenizer import AceStepAudioTokenizer, AudioTokenDetokenizer
from .condition_encoder import AceStepConditionEncoder
from .dit_config import DiTConfig, preset_config
from .dit_decoder import AceStepDiTModel


class AceStepConditionGenerationModel(nn.Module):
    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = config
        self.null_condition_emb = nn.Parameter(torch.randn(1, 1, config.enc_hidden))
        self.decoder = AceStepDiTModel(config)
        self.encoder = AceStepConditionEncoder(config)
        self.tokenizer = AceStepAudioTokenizer(config)
        self.detokenizer = AudioTokenDetokenizer(config)

    def encode_conditions(self, text_hidden_states: torch.Tensor, text_attention_mask: torch.Tensor,
                          lyric_hidden_states: torch.Tensor, lyric_attention_mask: torch.Tensor,
                          refer_audio: torch.Tensor, refer_audio_order_mask: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """The packed ``(encoder_hidden_states (B, S, enc_H), encoder_attention_mask (B, S))`` (see
        :class:`AceStepConditionEncoder`)."""
        return self.encoder(text_hidden_states, text_attention_mask, lyric_hidden_states, lyric_attention_mask,
                            refer_audio, refer_audio_order_mask)

    def null_states(self, like: torch.Tensor) -> torch.Tensor:
        """``null_condition_emb`` broadcast to ``like``'s ``(B, S, enc_H)`` (the unconditional encoder states)."""
        return self.null_condition_emb.to(like.dtype).expand_as(like)

    def velocity(self, xt: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor,
                 context_latents: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 encoder_attention_mask: torch.Tensor | None = None, r: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's velocity at flow time ``t (B,)`` (``r`` defaults to ``t``, as in every released use)."""
        return self.decoder(xt, t, t if r is None else r, encoder_hidden_states, context_latents,
                            attention_mask, encoder_attention_mask)

    def lm_hints(self, indices: torch.Tensor) -> torch.Tensor:
        """LM audio codes ``(B, G)`` or ``(B, G, Q)`` (5 per second) -> the 25 Hz hints ``(B, 5G, 64)``."""
        if indices.dim() == 2:
            indices = indices[..., None]
        return self.detokenizer(self.tokenizer.quantizer.get_output_from_indices(indices))

    @staticmethod
    def context_latents(src_latents: torch.Tensor, chunk_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[src_latents (B, T, 64) ‖ chunk_masks (B, T, 64)]`` -> ``(B, T, 128)``; ``chunk_mask`` (B, T) or
        (B, T, 64) is 1 where the model generates (default: everywhere, text-to-music)."""
        if chunk_mask is None:
            chunk = torch.ones_like(src_latents)
        else:
            chunk = chunk_mask.to(src_latents.dtype)
            if chunk.dim() == 2:
                chunk = chunk[..., None].expand_as(src_latents)
        return torch.cat((src_latents, chunk), dim=-1)

    def set_gradient_checkpointing(self, on: bool = True) -> None:
        """Recompute decoder and encoder layers in backward (the released trainer always does for the decoder)."""
        self.decoder.gradient_checkpointing = on
        for stack in (self.encoder.lyric_encoder, self.encoder.timbre_encoder, self.tokenizer.attention_pooler,
                      self.detokenizer):
            stack.gradient_checkpointing = on


def build_dit(preset: str | DiTConfig = "tiny", **overrides) -> AceStepConditionGenerationModel:
    """A model from a preset name (with :class:`DiTConfig` overrides) or a config; random weights. Build under
    ``torch.device("meta")`` for a layout-only model."""
    config = preset if isinstance(preset, DiTConfig) else preset_config(preset, **overrides)
    return AceStepConditionGenerationModel(config)
