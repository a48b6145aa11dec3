"""SongGen's Backbone: the composite model (``composite.SongGenComposite``) trained on collated batches
(``collate``), with the loss of its track pattern (``loss.songgen_loss``) and the codebook-weight curriculum
(``loss.codebook_weights``, by the run's progress: ``training_progress``).

The adapter root is the composite itself, so LoRA targets and ``model.freeze`` patterns use the original's module
names (``decoder.model.decoder.layers.0.self_attn.q_proj``, ``enc_to_dec_proj``, ``lyrics_encoder``). The T5
text encoder is kept inside for the checkpoint layout but never trained (its states come from the feature cache):
it is always frozen, and a LoRA run frees its weights (the forward pass never reads them).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch

from audiotrain.models.backbone import Backbone
from audiotrain.models.lazy import Lazy
from audiotrain_songgen import patterns as P
from audiotrain_songgen.composite import CROSS_MODULES, SongGenComposite
from audiotrain_songgen.loss import codebook_weights, songgen_loss

#: the decoder's attention and FFN projections by their original names (PEFT suffixes); the lyrics Conformer's
#: (linear_q, ...) and T5's (q, k, v, o) are named otherwise, so these reach the decoder only
DECODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


class SongGenBackbone(Backbone):
    default_lora_targets = DECODER_TARGETS

    def __init__(self, model: SongGenComposite, *, pattern: str, add_vocal_loss: bool, vocal_loss_weight: float = 0.1,
                 codebook_weighting: bool = True, freeze_cross: bool = False,
                 codec_factory: Callable[[], Any] | None = None, max_new_frames: int = 1500,
                 temperature: float = 1.0) -> None:
        super().__init__()
        self.model = model
        self._codec = Lazy(codec_factory, "an X-Codec (to decode samples)")  # not a child: not in the state dict
        self.max_new_frames = int(max_new_frames)  # model.max_new_frames: the most frames of a sample
        self.temperature = float(temperature)  # model.temperature
        self.pattern = P.check_pattern(pattern)
        self.add_vocal_loss = bool(add_vocal_loss) and pattern == "mixed_pro"
        self.vocal_loss_weight = float(vocal_loss_weight)
        self.codebook_weighting = bool(codebook_weighting)
        self.freeze_cross = bool(freeze_cross)
        self.codebooks = int(model.cfg["decoder"]["num_codebooks"])
        self._step, self._total = 0, 0

    def adapter_root(self) -> torch.nn.Module:
        return self.model

    def init_weights(self, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str | None]:
        """Weights of a mixed_pro stage into a model without vocal heads (a dual-track stage, add_vocal_loss off):
        the vocal heads are dropped, as SongGen's inter_A_V stages start from a copy of mixed_pro's step1."""
        if self.model.decoder.vocal_lm_heads is not None:
            return state, None
        vocal = [k for k in state if k.startswith("decoder.vocal_lm_heads.")]
        if not vocal:
            return state, None
        return ({k: v for k, v in state.items() if k not in vocal},
                f"its {len(vocal)} vocal-head tensors (mixed_pro's auxiliary vocal loss) are not used with "
                f"track_pattern={self.pattern}, add_vocal_loss=false: not loaded (the rest must fit exactly)")

    def frozen_patterns(self) -> list[str]:
        kept = ["text_encoder"] if self.model.text_encoder is not None else []
        return [*kept, *(CROSS_MODULES if self.freeze_cross else ())]

    def release_unused_weights(self, lora_targets: Sequence[str]) -> int:
        """A LoRA run reads the description's T5 states from the feature cache: T5 is not kept (unless a LoRA target
        names part of it)."""
        t5 = self.model.text_encoder
        if t5 is None or any(str(t).startswith("text_encoder") for t in lora_targets):
            return 0
        freed = sum(p.numel() for p in t5.parameters())
        self.model.text_encoder = None
        return freed

    def enable_gradient_checkpointing(self) -> None:
        self.model.enable_gradient_checkpointing(True)

    def training_progress(self, step: int, total: int) -> None:
        self._step, self._total = int(step), int(total)

    def weights(self) -> torch.Tensor | None:
        """The codebook weights of this step (None: codebook_weighting off, or a run of unknown length)."""
        if not self.codebook_weighting or self._total <= 0:
            return None
        return codebook_weights(min(self._step, self._total), self._total, self.codebooks)

    def forward_batch(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor | None]:
        return self.model(batch["decoder_input_ids"], lyrics_ids=batch["lyrics_ids"], lyrics_mask=batch["lyrics_mask"],
                          text_hidden=batch["text_hidden"], text_mask=batch["text_mask"],
                          mert_hidden=batch.get("mert_hidden"), voice_mask=batch.get("voice_mask"))

    # ---- samples (generate.py) ------------------------------------------------------------------------
    def codec(self):
        """The X-Codec that decodes samples (built on first use)."""
        return self._codec.get()

    def sample_frames(self, frames: int | None = None) -> int:
        """``frames`` (default ``model.max_new_frames``) capped by what fits the decoder's positions."""
        from audiotrain_songgen.generate import max_frames_for

        fit = max_frames_for(int(self.model.cfg["decoder"]["max_position_embeddings"]), self.codebooks, self.pattern)
        return max(1, min(int(frames if frames is not None else self.max_new_frames), fit))

    @torch.no_grad()
    def generate_tokens(self, conditions: Mapping[str, Any], *, seed: int, max_frames: int | None = None,
                        temperature: float | None = None, progress=None, use_cache: bool = True) -> torch.Tensor:
        """Sampled token rows ``[B, N, L]`` for a collated batch; sample ``i`` draws from its own generator seeded
        ``seed + i`` (so it gets the same tokens in any batch). ``use_cache=False``: without the decoder's KV
        cache (same tokens, recomputes the prefix every step)."""
        from audiotrain_songgen.generate import memory_inputs, sample

        b = conditions["text_hidden"].shape[0]
        gens = [torch.Generator().manual_seed(int(seed) + i) for i in range(b)]
        return sample(self, **memory_inputs(conditions), pattern=self.pattern, max_frames=self.sample_frames(max_frames),
                      temperature=self.temperature if temperature is None else float(temperature), generator=gens,
                      progress=progress, use_cache=use_cache)

    @torch.no_grad()
    def sample_audio(self, conditions: Mapping[str, Any], *, seed: int) -> tuple[torch.Tensor, int]:
        """Songs for the fixed prompts (at most ``model.max_new_frames`` frames, sampled at ``model.temperature``;
        EOS ends one earlier): ``(B, 1, N)`` at 16 kHz, zero-padded; for the dual-track patterns ``{"mix", "acc",
        "vocal"}`` of those (the mix first: it is the sample)."""
        from audiotrain_songgen.generate import SAMPLE_RATE, stack_waves, to_audio

        tokens = self.generate_tokens(conditions, seed=seed)
        waves = to_audio(tokens, self.pattern, self.codec())
        if self.pattern in P.SINGLE_TRACK:
            return stack_waves([w["mix"] for w in waves]), SAMPLE_RATE
        # dual-track: the mix is the sample; the accompaniment and the vocals are written beside it
        return {t: stack_waves([w[t] for w in waves]) for t in ("mix", "acc", "vocal")}, SAMPLE_RATE

    @torch.no_grad()
    def reference_audio(self, conditions: Mapping[str, Any]) -> tuple[torch.Tensor, int]:
        """The training targets' codes (the collated labels) decoded: the codec reconstruction, acc + vocal for
        the dual-track patterns; ``(B, 1, N)`` at 16 kHz."""
        from audiotrain_songgen.generate import SAMPLE_RATE, stack_waves, to_audio

        labels = conditions["labels"].cpu()
        lengths = conditions.get("label_lengths")
        rows = [labels[i, :, : int(lengths[i])] if lengths is not None else labels[i] for i in range(labels.shape[0])]
        waves = [to_audio(r, self.pattern, self.codec(), has_start=False)["mix"] for r in rows]
        return stack_waves(waves), SAMPLE_RATE

    def training_losses(self, batch: Mapping[str, Any], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        out = self.forward_batch(batch)
        vocal = self.add_vocal_loss and "vocal_labels" in batch and out.get("vocal_logits") is not None
        losses = songgen_loss(out["logits"], batch["labels"], batch["decoder_input_ids"], pattern=self.pattern,
                              weights=self.weights(), vocal_logits=out["vocal_logits"] if vocal else None,
                              vocal_labels=batch["vocal_labels"] if vocal else None,
                              vocal_weight=self.vocal_loss_weight)
        losses["acc_0"] = top1_accuracy(out["logits"], batch["labels"], batch["decoder_input_ids"], stream=0)
        return losses


def top1_accuracy(logits: torch.Tensor, labels: torch.Tensor, decoder_input: torch.Tensor, stream: int = 0) -> torch.Tensor:
    """Teacher-forced top-1 accuracy of one stream over the loss's targets (BOS, padding and every EOS after the
    first are not targets)."""
    s = labels.shape[-1]
    pred = logits[:, stream, -s:].detach().argmax(-1)
    target = labels[:, stream]
    mask = (decoder_input[:, stream] != P.EOS) & (target != P.IGNORE_INDEX) & (target != P.BOS)
    if not bool(mask.any()):
        return torch.zeros((), device=logits.device)
    return (pred[mask] == target[mask]).float().mean()
