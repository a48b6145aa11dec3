"""The TorToiSe backbone: UnifiedVoice trained as DLAS trains it (spec tortoise.md §3.2, §4), with previews.

Loss = ``model.text_loss_weight`` × text CE + ``model.mel_loss_weight`` × mel CE (AIVC's Text / Mel LR Ratio,
defaults 0.01 and 1.0), logged under DLAS's names — ``loss_text_ce``, ``loss_mel_ce``, ``loss_gpt_total`` — so
the MLflow charts read like AIVC's graph. AdamW's weight decay skips biases, norms and embeddings (the
``no_decay`` group), as DLAS's two parameter groups do.

Samples: the AR's mel codes for the fixed validation texts with their conditioning clips, decoded by the DVAE
into a mel, made audible by Griffin-Lim — a preview of what the AR learned. TorToiSe itself renders the codes'
latents with its diffusion decoder and vocoder, which this plugin does not train or ship.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch

from audiotrain.models.backbone import Backbone
from audiotrain.models.lazy import Lazy

LORA_TARGETS = ["c_attn", "c_proj", "c_fc"]  # GPT-2's attention and MLP projections (transformers' Conv1D)
SAMPLE_RATE = 22050


class TortoiseBackbone(Backbone):
    default_lora_targets = LORA_TARGETS

    def __init__(self, model: torch.nn.Module, *, mel_weight: float = 1.0, text_weight: float = 0.01,
                 sample_max_codes: int = 250, front_end: Callable[[], Any] | None = None) -> None:
        super().__init__()
        self.model = model
        self.mel_weight, self.text_weight = float(mel_weight), float(text_weight)
        self.sample_max_codes = int(sample_max_codes)
        self._front = Lazy(front_end, "the mel front end and the DVAE (to render samples)")  # not a child

    def adapter_root(self) -> torch.nn.Module:
        return self.model

    def parameter_groups(self):
        from audiotrain.train.param_groups import no_decay_group

        return [no_decay_group()]

    def training_losses(self, batch: Mapping[str, Any], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        loss_text, loss_mel, _ = self.model(batch["cond_mels"], batch["text"], batch["text_lengths"], batch["codes"],
                                            batch["wav_lengths"])
        total = self.text_weight * loss_text + self.mel_weight * loss_mel
        return {"loss": total, "loss_text_ce": loss_text.detach(), "loss_mel_ce": loss_mel.detach(),
                "loss_gpt_total": total.detach()}

    # ---- samples ------------------------------------------------------------------------------------
    def front_end(self):
        return self._front.get()

    def _waves(self, codes: Sequence[torch.Tensor]) -> tuple[torch.Tensor, int]:
        """Codes per example → Griffin-Lim waves (B, 1, N) at 22,050 Hz, zero-padded to the longest."""
        front = self.front_end()
        waves = []
        for c in codes:
            c = c.long().reshape(-1)
            if c.numel() == 0:
                waves.append(torch.zeros(256))
                continue
            mel = front.dvae.decode(c[None].to(next(front.dvae.parameters()).device))
            waves.append(front.mel.invert(mel.cpu().float())[0])
        n = max(w.numel() for w in waves)
        out = torch.zeros(len(waves), 1, n)
        for i, w in enumerate(waves):
            out[i, 0, : w.numel()] = w.clamp(-1.0, 1.0)
        return out, SAMPLE_RATE

    @torch.no_grad()
    def sample_codes(self, conditions: Mapping[str, Any], *, seed: int, max_codes: int | None = None,
                     temperature: float = 1.0) -> list[torch.Tensor]:
        """The AR's codes for each example's text after its conditioning latents (sample ``i`` seeded ``seed+i``)."""
        out = []
        for i in range(conditions["text"].shape[0]):
            text = conditions["text"][i, : int(conditions["text_lengths"][i])]
            latents = self.model.conditioning_latents(conditions["cond_mels"][i: i + 1])
            gen = torch.Generator(device=text.device).manual_seed(int(seed) + i)
            out.append(self.model.sample(text, latents, max_codes=max_codes or self.sample_max_codes,
                                         temperature=temperature, generator=gen)[0].cpu())
        return out

    @torch.no_grad()
    def sample_audio(self, conditions: Mapping[str, Any], *, seed: int) -> tuple[torch.Tensor, int]:
        return self._waves(self.sample_codes(conditions, seed=seed))

    @torch.no_grad()
    def reference_audio(self, conditions: Mapping[str, Any]) -> tuple[torch.Tensor, int]:
        """The target codes of each clip (its own length) through the same DVAE + Griffin-Lim path."""
        codes = [conditions["codes"][i, : max(1, int(conditions["wav_lengths"][i]) // 1024)]
                 for i in range(conditions["codes"].shape[0])]
        return self._waves(codes)
