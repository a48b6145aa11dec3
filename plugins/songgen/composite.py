"""SongGen's composite model (the ``SongGenMixedForConditionalGeneration`` layout, spec songgen.md §3.1): the
conditioning branches that build the decoder's cross-attention memory, and the decoder.

Children, in state-dict order::

    text_encoder            transformers T5EncoderModel (frozen; shared.weight tied to encoder.embed_tokens)
    decoder                 SongGenForCausalLM (decoder.py)
    enc_to_dec_proj         Linear(T5 d_model -> hidden), bias
    embed_prompts           Embedding(prompt_vocab_size = 7000, hidden): lyrics token ids
    lyrics_encoder          the core ConformerEncoder (hidden -> hidden), absent with add_prenet=false
    lyrics_to_dec_proj      Linear(hidden -> hidden), bias
    mert_layer_agg          Conv1d(25 -> 1, kernel 1): a learned weighted sum of the 25 MERT hidden states
    audio_mert_to_dec_proj  Linear(MERT width -> hidden), bias

The memory is the concatenation over time of [voice ; description ; lyrics]:

- voice: ``audio_mert_to_dec_proj(mert_layer_agg(mert_hidden))`` from the stacked MERT states
  ``[B, Tm, 25, Dm]``, masked by ``voice_mask`` (the caller's; a reference waveform of all zeros gives a fully
  masked row: that is how "no voice" is represented). Absent when ``mert_hidden`` is None.
- description: ``enc_to_dec_proj(t5_hidden * text_mask)``.
- lyrics: ``lyrics_to_dec_proj(conformer(embed_prompts(ids), lyrics_mask))`` (no Conformer without the prenet).

Since the decoder gives a masked memory position exactly zero attention weight, a fully masked voice leaves
the logits as they are with the voice part absent (up to float summation order): by construction, not by
training. The external frozen encoders of the original composite (``audio_encoder.*`` X-Codec, ``mert_model.*``
MERT) are not children here: their outputs come from the caller.

Init (a model trained from scratch; a released checkpoint overwrites it): the decoder as in decoder.py;
projections, ``embed_prompts`` and ``mert_layer_agg`` normal(0, 0.02) with zero biases; the Conformer keeps
PyTorch's default init; T5 its transformers init.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from audiotrain.models.conformer import ConformerEncoder

from .decoder import SongGenForCausalLM
from .presets import resolve_config

#: The modules the original's ``freeze_cross`` freezes (with prompt_cross_attention=true).
CROSS_MODULES = ("enc_to_dec_proj", "mert_layer_agg", "audio_mert_to_dec_proj", "embed_prompts", "lyrics_encoder",
                 "lyrics_to_dec_proj")
#: Key prefixes of the original composite that belong to external frozen encoders (not built here).
EXTERNAL_PREFIXES = ("audio_encoder.", "mert_model.")
#: Keys that share one tensor (a file may hold either).
TIED_KEYS = ("text_encoder.shared.weight", "text_encoder.encoder.embed_tokens.weight")


def t5_config(cfg: Mapping[str, Any]):
    """The transformers ``T5Config`` of a resolved config's ``text_encoder`` group."""
    from transformers import T5Config

    data = {k: v for k, v in dict(cfg["text_encoder"]).items() if k != "model_type"}
    return T5Config.from_dict(data)


class SongGenComposite(nn.Module):
    """The composite. ``cfg``: a preset name or a (partial) config dict, see :func:`presets.resolve_config`.

    ``freeze_text_encoder`` (default True, as in every released stage) makes T5 frozen: no gradients, kept in
    eval mode (no dropout) whatever ``train()`` says, and run under ``no_grad``.
    """

    def __init__(self, cfg: str | Mapping[str, Any] = "mixed_pro", freeze_text_encoder: bool = True) -> None:
        super().__init__()
        from transformers import T5EncoderModel

        self.cfg = resolve_config(cfg)
        dec = self.cfg["decoder"]
        hidden = int(dec["hidden_size"])
        t5 = t5_config(self.cfg)
        mert = self.cfg["mert"]
        self.text_encoder = T5EncoderModel(t5)
        self.decoder = SongGenForCausalLM(dec)
        self.enc_to_dec_proj = nn.Linear(int(t5.d_model), hidden)
        self.embed_prompts = nn.Embedding(int(self.cfg["prompt_vocab_size"]), hidden)
        lyr = self.cfg["lyrics_encoder"]
        self.lyrics_encoder = (ConformerEncoder(hidden, hidden, int(lyr["attention_heads"]), int(lyr["linear_units"]),
                                                int(lyr["num_blocks"]), float(lyr["dropout_rate"]),
                                                float(lyr["positional_dropout_rate"]),
                                                float(lyr["attention_dropout_rate"]))
                               if self.cfg["add_prenet"] else None)
        self.lyrics_to_dec_proj = nn.Linear(hidden, hidden)
        self.mert_layer_agg = nn.Conv1d(int(mert["num_layers"]), 1, kernel_size=1)
        self.audio_mert_to_dec_proj = nn.Linear(int(mert["hidden_size"]), hidden)
        self.freeze_text_encoder = freeze_text_encoder
        if freeze_text_encoder:
            self.text_encoder.requires_grad_(False)
            self.text_encoder.eval()
        self._init_own(float(dec["initializer_factor"]))

    def _init_own(self, std: float) -> None:
        for module in (self.enc_to_dec_proj, self.embed_prompts, self.lyrics_to_dec_proj, self.mert_layer_agg,
                       self.audio_mert_to_dec_proj):
            nn.init.normal_(module.weight, 0.0, std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def train(self, mode: bool = True) -> "SongGenComposite":
        super().train(mode)
        if self.freeze_text_encoder and self.text_encoder is not None:  # None: released by a LoRA run
            self.text_encoder.eval()
        return self

    def enable_gradient_checkpointing(self, on: bool = True) -> None:
        """Recompute each decoder layer and each Conformer block in backward (training only)."""
        self.decoder.model.decoder.gradient_checkpointing = on
        if self.lyrics_encoder is not None:
            self.lyrics_encoder.gradient_checkpointing = on

    def tie_weights(self) -> None:
        """Make ``text_encoder.encoder.embed_tokens`` share ``text_encoder.shared`` again (after an assign-load)."""
        self.text_encoder.encoder.embed_tokens.weight = self.text_encoder.shared.weight

    # ------------------------------------------------------------------ conditioning
    def text_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """T5's last hidden state ``[B, Lt, d_model]`` times the mask (what the pipeline caches)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_text_encoder):
            out = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return out * attention_mask[..., None].to(out.dtype)

    def voice_states(self, mert_hidden: torch.Tensor) -> torch.Tensor:
        """``[B, Tm, 25, Dm]`` stacked MERT states -> ``[B, Tm, hidden]``."""
        b, t, n, d = mert_hidden.shape
        from audiotrain.lora.quantize import input_dtype

        dtype = input_dtype(self.mert_layer_agg)  # its weight's (fp32 when model.frozen_dtype holds it in bf16)
        agg = self.mert_layer_agg(mert_hidden.reshape(b * t, n, d).to(dtype)).reshape(b, t, d)
        return self.audio_mert_to_dec_proj(agg)

    def lyrics_states(self, lyrics_ids: torch.Tensor, lyrics_mask: torch.Tensor) -> torch.Tensor:
        """Lyrics token ids ``[B, Ll]`` -> ``[B, Ll, hidden]``."""
        x = self.embed_prompts(lyrics_ids)
        if self.lyrics_encoder is not None:
            x, _ = self.lyrics_encoder(x, lyrics_mask)
        return self.lyrics_to_dec_proj(x)

    def memory(self, text_hidden: torch.Tensor, text_mask: torch.Tensor, lyrics_ids: torch.Tensor,
               lyrics_mask: torch.Tensor, mert_hidden: torch.Tensor | None = None,
               voice_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The cross-attention memory ``[B, M, hidden]`` and its bool mask ``[B, M]`` (True = attend):
        [voice ; description ; lyrics] (no voice part when ``mert_hidden`` is None; ``voice_mask`` None = all
        valid)."""
        from audiotrain.lora.quantize import input_dtype

        dtype = input_dtype(self.enc_to_dec_proj)
        text = self.enc_to_dec_proj((text_hidden.to(dtype) * text_mask[..., None].to(dtype)))
        parts, masks = [text, self.lyrics_states(lyrics_ids, lyrics_mask)], [text_mask.bool(), lyrics_mask.bool()]
        if mert_hidden is not None:
            voice = self.voice_states(mert_hidden)
            vmask = (torch.ones(voice.shape[:2], dtype=torch.bool, device=voice.device) if voice_mask is None
                     else voice_mask.to(voice.device).bool())
            parts.insert(0, voice)
            masks.insert(0, vmask)
        dtype = parts[-1].dtype
        return torch.cat([p.to(dtype) for p in parts], dim=1), torch.cat([m.to(parts[-1].device) for m in masks], 1)

    # ------------------------------------------------------------------ forward
    def forward(self, decoder_input_ids: torch.Tensor, *, lyrics_ids: torch.Tensor, lyrics_mask: torch.Tensor,
                text_hidden: torch.Tensor | None = None, text_mask: torch.Tensor | None = None,
                input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                mert_hidden: torch.Tensor | None = None, voice_mask: torch.Tensor | None = None,
                decoder_attention_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor | None]:
        """``{"logits": [B, N, S, 1088], "vocal_logits": [B, K, S, 1088] | None}``. The description is given as
        cached T5 states (``text_hidden``, ``text_mask``) or as T5 ids (``input_ids``, ``attention_mask``)."""
        if text_hidden is None:
            if input_ids is None or attention_mask is None:
                raise ValueError("give the description as text_hidden + text_mask or as input_ids + attention_mask")
            text_hidden, text_mask = self.text_states(input_ids, attention_mask), attention_mask
        elif text_mask is None:
            text_mask = torch.ones(text_hidden.shape[:2], dtype=torch.bool, device=text_hidden.device)
        memory, mask = self.memory(text_hidden, text_mask, lyrics_ids, lyrics_mask, mert_hidden, voice_mask)
        return self.decoder(decoder_input_ids, memory, mask, decoder_attention_mask)
