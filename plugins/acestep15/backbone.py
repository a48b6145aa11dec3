"""ACE-Step 1.5 as an audiotrain Backbone: the DiT (adapter root, the released layout), its own flow-matching
objective (:mod:`.objective`) on the cached features, and the samplers (:mod:`.sampling`) through the VAE.

Per training step, from the batch :mod:`.collate` makes: an optional random crop per song
(``dataset.crop_seconds``), one latent drawn from each song's cached posterior (as the original samples once at
preprocessing, here anew every step), the context ``[silence ‖ ones]`` and :func:`flow_matching_loss`. Every draw
comes from the step's generator, so a resumed run trains on the same crops, latents, times and noise. In eval mode
(the fixed-noise and validation losses) the posterior mean is used and nothing is dropped.

Only the decoder is trained: the condition encoder's outputs are cached, so LoRA targets the decoder's attention
(and optionally its MLP) and ``frozen_patterns`` keeps the encoder, the FSQ tokenizer and the detokenizer frozen in a
full fine-tune too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

from audiotrain.lora.adapter import matches
from audiotrain.models.backbone import Backbone
from audiotrain.models.lazy import Lazy

from .objective import ObjectiveConfig, flow_matching_loss
from .readers import SAMPLE_RATE
from .sampling import Conditioning, initial_noise, sample_guided, sample_turbo
from .vae import sample as posterior_sample

ATTENTION = {"both": ("self_attn", "cross_attn"), "self": ("self_attn",), "cross": ("cross_attn",)}
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
#: parts the forward pass of training never reads (their outputs are cached) and no run trains
UNUSED_IN_TRAINING = ("encoder", "tokenizer", "detokenizer")
SAMPLERS = ("auto", "turbo", "guided")


def lora_targets(layers: int, attention: str = "both", mlp: bool = False) -> tuple[str, ...]:
    """The decoder's module names LoRA targets by default: self- and/or cross-attention q/k/v/o of every layer,
    and the SwiGLU projections with ``mlp`` (full names: the condition encoder has q/k/v/o of its own)."""
    names = [f"decoder.layers.{i}.{a}.{p}" for i in range(layers) for a in ATTENTION[attention] for p in PROJECTIONS]
    if mlp:
        names += [f"decoder.layers.{i}.mlp.{p}" for i in range(layers) for p in MLP]
    return tuple(names)


@dataclass
class Settings:
    """What the backbone reads of ``model`` (and ``dataset.crop_seconds``)."""

    objective: ObjectiveConfig
    variant: str = "tiny"
    crop_frames: int | None = None
    sampler: str = "auto"
    turbo_steps: int = 8
    turbo_shift: float = 3.0
    guided_steps: int = 30
    guidance: float = 7.0
    guided_shift: float = 1.0
    guidance_mode: str = "apg"

    @property
    def turbo_sampling(self) -> bool:
        if self.sampler != "auto":
            return self.sampler == "turbo"
        return self.variant in ("tiny", "turbo", "xl-turbo")


class AceStep15Backbone(Backbone):
    def __init__(self, model: torch.nn.Module, settings: Settings, silence: torch.Tensor | None = None,
                 vae_factory: Callable[[], Any] | None = None, lora_attention: str = "both", lora_mlp: bool = False):
        super().__init__()
        self.model = model
        self.settings = settings
        self.default_lora_targets = lora_targets(model.config.num_hidden_layers, lora_attention, lora_mlp)
        self.register_buffer("silence", silence if silence is not None else torch.zeros(0, 0), persistent=False)
        self._vae = Lazy(vae_factory, "the VAE (samples)")

    def adapter_root(self) -> torch.nn.Module:
        return self.model

    def frozen_patterns(self) -> list[str]:
        return [f"{name}.*" for name in UNUSED_IN_TRAINING if getattr(self.model, name, None) is not None]

    def enable_gradient_checkpointing(self) -> None:
        self.model.decoder.gradient_checkpointing = True

    def release_unused_weights(self, lora_targets: Sequence[str]) -> int:
        """The condition encoder, the FSQ tokenizer and the detokenizer (818 M parameters of the 2B build) are not
        read in training (the condition features are cached; generation runs the condition encoder of the
        ``condition`` feature): a LoRA run does not keep them, unless a LoRA target names one of them."""
        freed = 0
        for name in UNUSED_IN_TRAINING:
            part = getattr(self.model, name, None)
            if part is None:
                continue
            if any(matches(f"{name}.{n}", str(t)) for n, _ in part.named_modules() for t in lora_targets):
                continue
            freed += sum(p.numel() for p in part.parameters())
            setattr(self.model, name, None)
        return freed

    # ---- inputs --------------------------------------------------------------------------------------------
    def context(self, batch: int, frames: int, like: torch.Tensor) -> torch.Tensor:
        """``[silence[:T] ‖ ones]`` ``(B, T, 2·latent)``: the text-to-music context (ACE-Step 1.5's LoRA
        preprocessing, spec §3 item 6; never the target latents)."""
        silence = self.silence
        if silence.shape[0] < frames:
            reps = -(-frames // max(1, silence.shape[0]))
            silence = silence.repeat(reps, 1)
        src = silence[:frames].to(like.device, like.dtype)[None].expand(batch, -1, -1)
        return self.model.context_latents(src)

    def _crop(self, batch: Mapping[str, Any], generator: torch.Generator | None):
        """Each song longer than ``crop_frames`` cut to a random window drawn from ``generator``."""
        mean, std, mask = batch["latent_mean"], batch["latent_std"], batch["attention_mask"]
        lengths = batch["latent_lengths"]
        crop = self.settings.crop_frames
        if crop is None or mean.shape[1] <= crop:
            return mean, std, mask
        dev = generator.device if generator is not None else torch.device("cpu")
        out_m, out_s, out_k = [], [], []
        for i in range(mean.shape[0]):
            n = int(lengths[i])
            start = 0
            if n > crop:
                start = int(torch.randint(n - crop + 1, (1,), generator=generator, device=dev))
            out_m.append(mean[i, start:start + crop])
            out_s.append(std[i, start:start + crop])
            out_k.append(mask[i, start:start + crop])
        return torch.stack(out_m), torch.stack(out_s), torch.stack(out_k)

    @staticmethod
    def _or_none(mask: torch.Tensor | None) -> torch.Tensor | None:
        return None if mask is None or bool(mask.all()) else mask

    # ---- training ------------------------------------------------------------------------------------------
    def training_losses(self, batch: Mapping[str, Any], generator: torch.Generator | None = None
                        ) -> dict[str, torch.Tensor]:
        mean, std, mask = self._crop(batch, generator)
        x0 = posterior_sample(mean, std, generator) if self.training else mean
        objective = self.settings.objective
        if not self.training:  # the fixed-noise / validation losses: the conditional model, nothing dropped
            objective = ObjectiveConfig(timesteps=objective.timesteps, mu=objective.mu, sigma=objective.sigma,
                                        cfg_dropout=0.0, mask_encoder_padding=objective.mask_encoder_padding)
        return flow_matching_loss(self.model, x0, batch["encoder_hidden_states"],
                                  self.context(x0.shape[0], x0.shape[1], x0), self._or_none(mask),
                                  self._or_none(batch["encoder_attention_mask"]), config=objective,
                                  generator=generator)

    # ---- samples -------------------------------------------------------------------------------------------
    def vae(self):
        return self._vae.get()

    def conditioning(self, conditions: Mapping[str, Any]) -> Conditioning:
        mean = conditions["latent_mean"]
        enc_mask = conditions["encoder_attention_mask"] if self.settings.objective.mask_encoder_padding else None
        return Conditioning(encoder_hidden_states=conditions["encoder_hidden_states"],
                            encoder_attention_mask=self._or_none(enc_mask),
                            context_latents=self.context(mean.shape[0], mean.shape[1], mean),
                            attention_mask=self._or_none(conditions["attention_mask"]))

    @torch.no_grad()
    def sample_latents(self, conditions: Mapping[str, Any], *, seed: int,
                       progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """Latents ``(B, T, latent)`` for the batch's conditions and lengths: the turbo sampler (no guidance) for
        turbo variants, else guided base/sft sampling (``model.sampling``)."""
        s = self.settings
        mean = conditions["latent_mean"]
        noise = initial_noise(tuple(mean.shape), torch.Generator().manual_seed(int(seed)), mean.device).to(mean.dtype)
        cond = self.conditioning(conditions)
        if s.turbo_sampling:
            return sample_turbo(self.model, noise, cond, steps=s.turbo_steps, shift=s.turbo_shift, progress=progress)
        return sample_guided(self.model, noise, cond, steps=s.guided_steps, guidance=s.guidance,
                             shift=s.guided_shift, guidance_mode=s.guidance_mode, progress=progress)

    def decode(self, latents: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, int]:
        """VAE decode to ``(B, 2, T·1920)`` at 48 kHz, each song silent past its own length."""
        vae = self.vae()
        vae.to(latents.device)
        wavs = vae.decode_latents(latents.float()).float().clamp(-1, 1)
        keep = (lengths.to(wavs.device) * vae.hop_length)[:, None, None]
        wavs = wavs * (torch.arange(wavs.shape[-1], device=wavs.device)[None, None] < keep).to(wavs.dtype)
        return wavs, SAMPLE_RATE

    @torch.no_grad()
    def sample_audio(self, conditions: Mapping[str, Any], *, seed: int) -> tuple[torch.Tensor, int]:
        """Songs for the fixed prompts (their lengths): sampled (see :meth:`sample_latents`), VAE-decoded."""
        return self.decode(self.sample_latents(conditions, seed=seed), conditions["latent_lengths"])

    @torch.no_grad()
    def reference_audio(self, conditions: Mapping[str, Any]) -> tuple[torch.Tensor, int]:
        """The VAE reconstruction of the posterior means (what the model is trained towards)."""
        return self.decode(conditions["latent_mean"], conditions["latent_lengths"])
