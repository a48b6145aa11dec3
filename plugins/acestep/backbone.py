"""ACE-Step as an audiotrain Backbone: the transformer, its flow-matching loss and its sampler."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch

from audiotrain.lora.adapter import matches
from audiotrain.models.backbone import Backbone
from audiotrain.models.lazy import Lazy

from audiotrain_acestep import flow
from audiotrain_acestep.attention import UNUSED_CROSS_ATTENTION, Attention
from audiotrain_acestep.transformer import ACEStepTransformer2DModel

#: the default of ACE-Step's config/zh_rap_lora_config.json
DEFAULT_TARGETS = ("speaker_embedder", "linear_q", "linear_k", "linear_v", "to_q", "to_k", "to_v", "to_out.0")


class ACEStepBackbone(Backbone):
    default_lora_targets = DEFAULT_TARGETS

    def __init__(self, transformer: ACEStepTransformer2DModel, settings: Mapping[str, Any],
                 decoder_factory: Callable[[], Any] | None = None):
        super().__init__()
        self.transformer = transformer
        self.shift = float(settings.get("shift", 3.0))
        self.num_train_timesteps = int(settings.get("num_train_timesteps", 1000))
        self.logit_mean = float(settings.get("logit_mean", 0.0))
        self.logit_std = float(settings.get("logit_std", 1.0))
        self.text_dropout = float(settings.get("text_dropout", 0.15))
        self.speaker_dropout = float(settings.get("speaker_dropout", 0.5))
        self.lyric_dropout = float(settings.get("lyric_dropout", 0.15))
        self.ssl_coeff = float(settings.get("ssl_coeff", 1.0))
        self.guidance_scale = float(settings.get("sample_guidance_scale", 1.0))
        self.sample_steps = int(settings.get("sample_steps", 60))  # Euler steps of the flow sampler
        self.register_buffer("sigmas", flow.shifted_sigmas(self.num_train_timesteps, self.shift), persistent=False)
        self._decoder = Lazy(decoder_factory, "a DCAE decoder")

    def adapter_root(self) -> torch.nn.Module:
        return self.transformer

    def enable_gradient_checkpointing(self) -> None:
        self.transformer.enable_gradient_checkpointing()

    def release_unused_weights(self, lora_targets: Sequence[str]) -> int:
        """The cross-attentions' ``add_q_proj``/``add_k_proj``/``add_v_proj``/``to_add_out`` are in the released
        weights but never used by the forward pass (24 x 4 Linear 2560x2560: 629 M parameters, 19% of the
        transformer). A LoRA run does not keep them, unless a LoRA target names one of them."""
        freed = 0
        for prefix, module in self.transformer.named_modules():
            if not (isinstance(module, Attention) and module.is_cross_attention):
                continue
            for name in UNUSED_CROSS_ATTENTION:
                child = getattr(module, name, None)
                if child is None or any(matches(f"{prefix}.{name}", str(t)) for t in lora_targets):
                    continue
                freed += sum(p.numel() for p in child.parameters())
                setattr(module, name, None)
        return freed

    # ---- training -------------------------------------------------------------------------
    def _drop(self, batch_size: int, p: float, gen: torch.Generator | None, device) -> torch.Tensor:
        """Per-sample keep mask (1 = keep) with drop probability ``p``."""
        r = torch.rand(batch_size, generator=gen, device=gen.device if gen is not None else "cpu")
        return (r >= p).to(device=device, dtype=torch.float32)

    def training_losses(self, batch: Mapping[str, Any], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        x0 = batch["latents"]
        b = x0.shape[0]
        dev = x0.device
        text, text_mask = batch["text_hidden"], batch["text_mask"]
        speaker = batch["speaker_emb"]
        lyric_ids, lyric_mask = batch["lyric_token_ids"], batch["lyric_mask"]
        if self.training:  # condition dropout (classifier-free guidance), independent per sample
            keep_t = self._drop(b, self.text_dropout, generator, dev)
            keep_s = self._drop(b, self.speaker_dropout, generator, dev)
            keep_l = self._drop(b, self.lyric_dropout, generator, dev)
            text = text * keep_t.view(b, 1, 1).to(text.dtype)
            speaker = speaker * keep_s.view(b, 1).to(speaker.dtype)
            lyric_ids = lyric_ids * keep_l.view(b, 1).long()
            lyric_mask = lyric_mask * keep_l.view(b, 1).to(lyric_mask.dtype)
        sigma = flow.sample_sigma(b, self.sigmas, self.logit_mean, self.logit_std, generator).to(dev)
        noise = torch.randn(x0.shape, generator=generator, device=generator.device if generator is not None else "cpu").to(dev, x0.dtype)
        x_t = flow.noisy(x0, sigma.to(x0.dtype), noise)
        ssl = None
        if self.ssl_coeff > 0:  # projector k is paired with teacher ssl_names[k]
            keys = [f"ssl_{name}" for name in self.transformer.ssl_names]
            present = [k for k in keys if k in batch]
            if present and len(present) < len(keys):
                raise ValueError(f"REPA needs every teacher's features {keys}; the batch has only {present}")
            if present:
                ssl = [batch[k] for k in keys]
        out = self.transformer(
            hidden_states=x_t, attention_mask=batch["latent_mask"], encoder_text_hidden_states=text,
            text_attention_mask=text_mask, speaker_embeds=speaker, lyric_token_idx=lyric_ids, lyric_mask=lyric_mask,
            timestep=sigma * 1000.0, ssl_hidden_states=ssl)
        denoise = flow.x0_mse(x_t, out.sample, x0, sigma, batch["latent_mask"])
        losses = {"denoising_loss": denoise}
        total = denoise
        if out.proj_losses:
            for name, value in out.proj_losses:
                losses[f"{name}_loss"] = value
            total = total + self.ssl_coeff * torch.stack([v for _, v in out.proj_losses]).mean()
        losses["loss"] = total
        return losses

    # ---- samples --------------------------------------------------------------------------
    def decoder(self):
        return self._decoder.get()

    @torch.no_grad()
    def sample_latents(self, conditions: Mapping[str, Any], *, seed: int, steps: int | None = None) -> torch.Tensor:
        """Latents from noise by ``steps`` Euler steps of the flow (None: ``model.sample_steps``)."""
        steps = int(steps or self.sample_steps)
        x0 = conditions["latents"]
        b = x0.shape[0]
        dev = x0.device
        tr = self.transformer
        enc, enc_mask = tr.encode(conditions["text_hidden"], conditions["text_mask"], conditions["speaker_emb"],
                                  conditions["lyric_token_ids"], conditions["lyric_mask"])
        if self.guidance_scale != 1.0:
            null, null_mask = tr.encode(torch.zeros_like(conditions["text_hidden"]), conditions["text_mask"],
                                        torch.zeros_like(conditions["speaker_emb"]),
                                        torch.zeros_like(conditions["lyric_token_ids"]),
                                        torch.zeros_like(conditions["lyric_mask"]))
        mask = conditions["latent_mask"]

        def velocity(x, t):
            v, _ = tr.decode(x, mask, enc, enc_mask, t)
            if self.guidance_scale != 1.0:
                vu, _ = tr.decode(x, mask, null, null_mask, t)
                v = vu + self.guidance_scale * (v - vu)
            return v

        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        return flow.euler_sample(velocity, tuple(x0.shape), steps, self.shift, gen, dev, x0.dtype)

    def _decode(self, latents: torch.Tensor, latent_lengths: torch.Tensor) -> tuple[torch.Tensor, int]:
        dec = self.decoder()
        dec.to(latents.device)
        lengths = latent_lengths.cpu() * dec.hop_length * dec.time_multiple
        lengths = (lengths * dec.source_sample_rate) // dec.sample_rate
        sr, wavs = dec.decode(latents, audio_lengths=lengths)
        return wavs, sr

    @torch.no_grad()
    def reference_audio(self, conditions: Mapping[str, Any]) -> tuple[torch.Tensor, int]:
        """The DCAE reconstruction of the target latents (what the model is trained towards)."""
        return self._decode(conditions["latents"], conditions["latent_lengths"])

    @torch.no_grad()
    def sample_audio(self, conditions: Mapping[str, Any], *, seed: int) -> tuple[torch.Tensor, int]:
        """Songs for the fixed prompts, sampled in ``model.sample_steps`` flow steps and decoded by the DCAE."""
        latents = self.sample_latents(conditions, seed=seed)
        return self._decode(latents, conditions["latent_lengths"])
