"""ACE-Step's flow-matching training objective and Euler sampler (pure functions over tensors).

Schedule: base σ_i = (1000 − i)/1000 for i = 0..999, shifted σ' = s·σ / (1 + (s − 1)·σ); timestep = σ'·1000.
Training: u ~ N(logit_mean, logit_std), idx = clamp(int(sigmoid(u)·1000), 0, 999), σ = σ'[idx];
x_t = σ·ε + (1 − σ)·x0; the model predicts a velocity v̂; x̂0 = x_t − σ·v̂; loss = MSE(x̂0, x0) over
real (unpadded) latent frames.
"""
from __future__ import annotations

import torch


def shifted_sigmas(num_train_timesteps: int = 1000, shift: float = 3.0) -> torch.Tensor:
    """σ' for i = 0..T−1, descending from 1."""
    t = torch.arange(num_train_timesteps, 0, -1, dtype=torch.float64) / num_train_timesteps
    return (shift * t / (1 + (shift - 1) * t)).float()


def sample_sigma(batch: int, sigmas: torch.Tensor, logit_mean: float, logit_std: float,
                 generator: torch.Generator | None) -> torch.Tensor:
    """Discretised logit-normal index into the shifted schedule → σ (batch,)."""
    n = sigmas.numel()
    u = torch.randn(batch, generator=generator, device="cpu" if generator is None else generator.device)
    u = u.to(sigmas.device) * logit_std + logit_mean
    idx = (torch.sigmoid(u) * n).long().clamp(0, n - 1)
    return sigmas[idx]


def noisy(x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    s = sigma.view(-1, *([1] * (x0.dim() - 1)))
    return s * noise + (1 - s) * x0


def x0_mse(x_t: torch.Tensor, v_hat: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor,
           frame_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of (x_t − σ·v̂ − x0)² over the real frames (frame_mask (B, T) of 0/1)."""
    s = sigma.view(-1, *([1] * (x0.dim() - 1)))
    err = (x_t - s * v_hat - x0).float() ** 2
    if frame_mask is None:
        return err.mean()
    m = frame_mask.to(err.dtype).view(frame_mask.shape[0], *([1] * (x0.dim() - 2)), frame_mask.shape[1])
    m = m.expand_as(err)
    return (err * m).sum() / m.sum().clamp_min(1.0)


@torch.no_grad()
def euler_sample(velocity, shape: tuple[int, ...], steps: int, shift: float, generator: torch.Generator,
                 device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Integrate dx/dσ = v from σ=1 (noise) to σ=0 on the shifted schedule; ``velocity(x, t)`` → v."""
    x = torch.randn(shape, generator=generator, device=generator.device).to(device=device, dtype=dtype)
    base = torch.linspace(1.0, 0.0, steps + 1, device=device)
    sig = shift * base / (1 + (shift - 1) * base)
    for i in range(steps):
        t = torch.full((shape[0],), float(sig[i] * 1000), device=device)
        v = velocity(x, t)
        x = x + (sig[i + 1] - sig[i]) * v
    return x
