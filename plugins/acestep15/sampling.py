"""Sampling the ACE-Step 1.5 DiT (flow matching from noise at t = 1 to the latents at t = 0).

The velocity ``v`` estimates ``x1 - x0`` (noise minus data), so an Euler step from ``t`` to ``s`` is
``x <- x - v (t - s)`` and the step to the end is ``x0 = x - v t``.

- **Turbo** (:func:`sample_turbo`): no CFG (the model is CFG-distilled), 8 steps at shift 3 by default: the
  times ``1 - i/n`` shifted by ``s t / (1 + (s - 1) t)``; for 8 steps at shift 3 the released table
  :data:`TURBO_SHIFT3_TIMESTEPS` itself. Euler between the times, the last step straight to x0.
- **Base / SFT** (:func:`sample_guided`): ``linspace(1, 0, N + 1)`` shifted (defaults: 30 steps, shift 1,
  guidance 7), the conditional and the null branch in one batch, combined by APG (the released default: momentum
  -0.75, norm threshold 2.5, eta 0) or plain CFG (``guidance_mode="cfg"``).

APG (adaptive projected guidance): ``d = v_cond - v_uncond``; a momentum average ``m <- d + momentum * m``
replaces d; d is scaled down to norm ``norm_threshold`` when longer; d is split into its part parallel to
``v_cond`` and the orthogonal rest; the result is ``v_cond + (guidance - 1) (orthogonal + eta * parallel)``.
Norms and projections are taken over ``apg_dims`` (default: time, per latent channel). Not reproduced: ADG,
the CFG interval, Heun/SDE solvers and the DCW correction of the released sampler.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch

from audiotrain.errors import UserError

from .objective import TURBO_SHIFT3_TIMESTEPS

GUIDANCE_MODES = ("apg", "cfg")


@dataclass
class Conditioning:
    """What the decoder is conditioned on: packed encoder states (B, S, enc_H) and mask (B, S), the context
    latents (B, T, 128), and the latent frame mask (B, T) when the batch holds different lengths."""

    encoder_hidden_states: torch.Tensor
    encoder_attention_mask: torch.Tensor | None
    context_latents: torch.Tensor
    attention_mask: torch.Tensor | None = None


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """``shift * t / (1 + (shift - 1) * t)`` (1 is the identity)."""
    return shift * t / (1 + (shift - 1) * t)


def turbo_timesteps(steps: int = 8, shift: float = 3.0) -> torch.Tensor:
    """The ``steps`` flow times a turbo model is sampled at (float32, from 1 down, 0 excluded)."""
    if steps < 1:
        raise UserError(f"steps={steps} must be at least 1.")
    if steps == len(TURBO_SHIFT3_TIMESTEPS) and shift == 3.0:
        return torch.tensor(TURBO_SHIFT3_TIMESTEPS)
    return shift_time(1 - torch.arange(steps, dtype=torch.float32) / steps, shift)


def guided_timesteps(steps: int = 30, shift: float = 1.0) -> torch.Tensor:
    """``linspace(1, 0, steps + 1)`` shifted: the ``steps + 1`` times of a base/sft sampling run."""
    if steps < 1:
        raise UserError(f"steps={steps} must be at least 1.")
    return shift_time(torch.linspace(1, 0, steps + 1), shift)


def initial_noise(shape: tuple[int, ...], generator: torch.Generator | None = None,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """Standard normal ``shape`` drawn from ``generator`` (on its device), moved to ``device``."""
    return torch.randn(shape, generator=generator, device=generator.device if generator else None).to(device)


class MomentumBuffer:
    """APG's running average of the guidance difference (``momentum`` -0.75 alternates its sign)."""

    def __init__(self, momentum: float = -0.75) -> None:
        self.momentum = momentum
        self.average: torch.Tensor | None = None

    def update(self, value: torch.Tensor) -> torch.Tensor:
        self.average = value if self.average is None else value + self.momentum * self.average
        return self.average


def apg(v_cond: torch.Tensor, v_uncond: torch.Tensor, guidance: float, buffer: MomentumBuffer | None,
        norm_threshold: float = 2.5, eta: float = 0.0, dims: tuple[int, ...] = (1,)) -> torch.Tensor:
    """Adaptive projected guidance (see the module doc), computed in float32."""
    c, u = v_cond.float(), v_uncond.float()
    diff = c - u
    if buffer is not None:
        diff = buffer.update(diff)
    if norm_threshold > 0:
        norm = diff.norm(p=2, dim=dims, keepdim=True)
        diff = diff * torch.clamp(norm_threshold / norm.clamp_min(1e-12), max=1.0)
    unit = torch.nn.functional.normalize(c, dim=dims)
    parallel = (diff * unit).sum(dim=dims, keepdim=True) * unit
    update = (diff - parallel) + eta * parallel
    return (c + (guidance - 1) * update).to(v_cond.dtype)


def _euler(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise: torch.Tensor,
           times: torch.Tensor, final_to_zero: bool, progress: Callable[[int, int], None] | None) -> torch.Tensor:
    x = noise
    n = len(times) if final_to_zero else len(times) - 1
    for i in range(n):
        t = float(times[i])
        v = velocity(x, torch.full((x.shape[0],), t, device=x.device, dtype=torch.float32))
        x = x - v * t if i == n - 1 else x - v * (t - float(times[i + 1]))
        if progress is not None:
            progress(i + 1, n)
    return x


@torch.no_grad()
def sample_turbo(model, noise: torch.Tensor, cond: Conditioning, *, steps: int = 8, shift: float = 3.0,
                 progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Latents ``(B, T, 64)`` from ``noise`` with a turbo model (no guidance)."""
    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return model.velocity(x, t, cond.encoder_hidden_states, cond.context_latents, cond.attention_mask,
                              cond.encoder_attention_mask)

    out = _euler(velocity, noise, turbo_timesteps(steps, shift), True, progress)
    return _zero_padding(out, cond.attention_mask)


@torch.no_grad()
def sample_guided(model, noise: torch.Tensor, cond: Conditioning, *, steps: int = 30, guidance: float = 7.0,
                  shift: float = 1.0, guidance_mode: Literal["apg", "cfg"] = "apg", momentum: float = -0.75,
                  norm_threshold: float = 2.5, eta: float = 0.0, apg_dims: tuple[int, ...] = (1,),
                  progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Latents ``(B, T, 64)`` from ``noise`` with a base/sft model and classifier-free guidance."""
    if guidance_mode not in GUIDANCE_MODES:
        raise UserError(f"guidance_mode={guidance_mode} is unknown: use one of {', '.join(GUIDANCE_MODES)}.")
    enc = cond.encoder_hidden_states
    states = torch.cat((enc, model.null_states(enc)), dim=0)
    enc_mask = None
    if cond.encoder_attention_mask is not None:
        enc_mask = torch.cat((cond.encoder_attention_mask, torch.ones_like(cond.encoder_attention_mask)), dim=0)
    context = torch.cat((cond.context_latents, cond.context_latents), dim=0)
    attn = None if cond.attention_mask is None else torch.cat((cond.attention_mask, cond.attention_mask), dim=0)
    buffer = MomentumBuffer(momentum) if guidance_mode == "apg" else None
    b = noise.shape[0]

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        both = model.velocity(torch.cat((x, x), dim=0), torch.cat((t, t), dim=0), states, context, attn, enc_mask)
        v_cond, v_uncond = both[:b], both[b:]
        if guidance_mode == "cfg":
            return v_uncond + guidance * (v_cond - v_uncond)
        return apg(v_cond, v_uncond, guidance, buffer, norm_threshold, eta, apg_dims)

    out = _euler(velocity, noise, guided_timesteps(steps, shift), False, progress)
    return _zero_padding(out, cond.attention_mask)


def _zero_padding(x: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    return x if attention_mask is None else x * attention_mask[..., None].to(x.dtype)
