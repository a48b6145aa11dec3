"""The ACE-Step 1.5 training objective: the model's own ``forward`` (flow matching), with padding masked.

Per batch of clean latents ``x0 (B, T, 64)`` (the data) and their conditions:

- ``t``: by default the model's own law, the larger of two draws of ``sigmoid(N(mu, sigma))`` (mu -0.4, sigma 1
  from the config; median of t ≈ 0.536, of each single draw ≈ sigmoid(-0.4) = 0.401); no shift. ``r = t``.
  ``timesteps="turbo_schedule"`` instead draws uniformly from the eight shift-3 turbo inference times
  :data:`TURBO_SHIFT3_TIMESTEPS`: what the released built-in trainer does for every variant. Use it only to
  reproduce that trainer, or to specialise a turbo model to its own eight sampling steps; it is wrong for
  base/sft/XL-base (they sample on a continuous schedule with CFG).
- CFG dropout: each sample's encoder states are replaced, whole, by ``null_condition_emb`` with probability
  ``cfg_dropout`` (0.15), so the model keeps learning the unconditional branch that CFG sampling needs.
- ``x1 ~ N(0, I)``, ``xt = t·x1 + (1 - t)·x0``, target ``x1 - x0``; the loss is the MSE over valid (unpadded)
  elements: with no padding it is the plain mean of the released forward.

Every draw comes from the ``torch.Generator`` given (on the CPU, then moved), so a step is reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from audiotrain.errors import UserError

#: the shift-3, 8-step turbo inference times (also the released trainer's training times)
TURBO_SHIFT3_TIMESTEPS = (1.0, 0.9545, 0.9, 0.8333, 0.75, 0.6429, 0.5, 0.3)
TIMESTEP_MODES = ("logit_normal", "turbo_schedule")


@dataclass
class ObjectiveConfig:
    """The objective's knobs. ``mu``/``sigma`` None take the model config's ``timestep_mu``/``timestep_sigma``.
    ``mask_encoder_padding=False`` lets the decoder attend to padded encoder positions as the released forward
    does (bit-for-bit the original at batch 1 with the preprocessed 769-token states)."""

    timesteps: Literal["logit_normal", "turbo_schedule"] = "logit_normal"
    mu: float | None = None
    sigma: float | None = None
    cfg_dropout: float = 0.15
    mask_encoder_padding: bool = True

    def __post_init__(self) -> None:
        if self.timesteps not in TIMESTEP_MODES:
            raise UserError(f"timesteps={self.timesteps} is unknown: use one of {', '.join(TIMESTEP_MODES)}.")
        if not 0.0 <= float(self.cfg_dropout) <= 1.0:
            raise UserError(f"cfg_dropout={self.cfg_dropout} is not a probability: use a value in [0, 1] "
                            f"(0.15 as the model was trained).")


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=generator.device if generator else None)


def _normal(shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=generator.device if generator else None)


def sample_timesteps(batch: int, generator: torch.Generator | None = None, *, mu: float = -0.4,
                     sigma: float = 1.0, mode: str = "logit_normal",
                     device: torch.device | str | None = None) -> torch.Tensor:
    """``(batch,)`` float32 flow times (see the module doc for the two modes)."""
    if mode == "turbo_schedule":
        table = torch.tensor(TURBO_SHIFT3_TIMESTEPS)
        pick = torch.randint(len(table), (batch,), generator=generator,
                             device=generator.device if generator else None)
        return table[pick.cpu()].to(device)
    if mode != "logit_normal":
        raise UserError(f"timesteps={mode} is unknown: use one of {', '.join(TIMESTEP_MODES)}.")
    draws = torch.sigmoid(_normal((2, batch), generator) * sigma + mu)
    return draws.max(dim=0).values.to(device)


def cfg_dropout(encoder_hidden_states: torch.Tensor, encoder_attention_mask: torch.Tensor | None,
                null_condition_emb: torch.Tensor, prob: float, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Replace each sample's states by the null embedding with probability ``prob``. Returns the states, the
    mask (all ones on a dropped row: every position holds the same null vector) and the dropped flags (B,)."""
    b = encoder_hidden_states.shape[0]
    dropped = (_uniform((b,), generator) < prob).to(encoder_hidden_states.device)
    if not bool(dropped.any()):
        return encoder_hidden_states, encoder_attention_mask, dropped
    null = null_condition_emb.to(encoder_hidden_states.dtype).expand_as(encoder_hidden_states)
    states = torch.where(dropped[:, None, None], null, encoder_hidden_states)
    if encoder_attention_mask is not None:
        encoder_attention_mask = torch.where(dropped[:, None], torch.ones_like(encoder_attention_mask),
                                             encoder_attention_mask)
    return states, encoder_attention_mask, dropped


def masked_mse(prediction: torch.Tensor, target: torch.Tensor,
               attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error (float32) over the elements of valid frames (``attention_mask (B, T)``, 1 = valid)."""
    err = (prediction.float() - target.float()).pow(2)
    if attention_mask is None:
        return err.mean()
    m = attention_mask.to(err.dtype)[..., None]
    return (err * m).sum() / (m.sum() * err.shape[-1]).clamp_min(1.0)


def flow_matching_loss(model, target_latents: torch.Tensor, encoder_hidden_states: torch.Tensor,
                       context_latents: torch.Tensor, attention_mask: torch.Tensor | None = None,
                       encoder_attention_mask: torch.Tensor | None = None, *,
                       config: ObjectiveConfig | None = None, generator: torch.Generator | None = None,
                       t: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """One step of the objective for an :class:`AceStepConditionGenerationModel` ``model``.

    ``target_latents`` are the clean latents ``x0 (B, T, 64)``; ``t`` (B,) and ``noise`` (B, T, 64) may be given
    (else drawn from ``generator``). Returns scalars: ``loss`` (float32, the one to optimise), ``t_mean`` and
    ``cfg_dropped`` (the fraction of samples trained unconditionally), ready to log as metrics."""
    config = config or ObjectiveConfig()
    b = target_latents.shape[0]
    device = target_latents.device
    if t is None:
        mu = model.config.timestep_mu if config.mu is None else config.mu
        sigma = model.config.timestep_sigma if config.sigma is None else config.sigma
        t = sample_timesteps(b, generator, mu=mu, sigma=sigma, mode=config.timesteps, device=device)
    states, enc_mask, dropped = cfg_dropout(encoder_hidden_states, encoder_attention_mask,
                                            model.null_condition_emb, config.cfg_dropout, generator)
    if noise is None:
        noise = _normal(tuple(target_latents.shape), generator).to(device)
    x0, x1 = target_latents, noise.to(target_latents.dtype)
    tt = t.to(x0.dtype)[:, None, None]
    xt = tt * x1 + (1 - tt) * x0
    velocity = model.velocity(xt, t.to(device), states, context_latents, attention_mask,
                              enc_mask if config.mask_encoder_padding else None)
    loss = masked_mse(velocity, x1 - x0, attention_mask)
    return {"loss": loss, "t_mean": t.detach().float().mean(), "cfg_dropped": dropped.float().mean()}
