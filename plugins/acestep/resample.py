"""Band-limited polyphase resampling with a Hann-windowed sinc kernel, in torch (any device, no soxr/torchaudio).

Method. With ``g = gcd(orig, new)``, ``o = orig/g`` input samples map to ``n = new/g`` output samples. Output
sample ``j = q*n + p`` (phase ``p``) sits at input position ``q*o + p*o/n``; it is

    y[j] = sum_i x[i] * h(i - q*o - p*o/n),
    h(d) = (c/o) * sinc(c*d/o) * w(c*d/o),   c = rolloff * min(o, n),
    w(t) = cos^2(pi*t / (2L)) for |t| <= L else 0   (L = ``lowpass_filter_width`` zero crossings).

``c/o`` is the low-pass cutoff in cycles per input sample, set just below the lower Nyquist rate. Each phase is one
row of a ``(n, 2W + o)`` kernel (``W = ceil(L*o/c)`` input samples each side) applied by a strided ``conv1d``
(stride ``o``); the phases are then interleaved. The input is zero-padded at both ends and the output has
``ceil(N*new/orig)`` samples. With the defaults (L=6, rolloff 0.99) this is the same filter as the
``torchaudio.transforms.Resample`` default that ACE-Step uses, so latents match the reference pipeline.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

__all__ = ["resample", "resampled_length", "sinc_kernel"]


def resampled_length(num_samples: int, orig_sr: int, new_sr: int) -> int:
    """Output length ``ceil(num_samples * new_sr / orig_sr)`` (exact integer arithmetic)."""
    g = math.gcd(int(orig_sr), int(new_sr))
    o, n = orig_sr // g, new_sr // g
    return -((-num_samples * n) // o)


@lru_cache(maxsize=32)
def _kernel_cpu(orig: int, new: int, lowpass_filter_width: int, rolloff: float) -> tuple[torch.Tensor, int]:
    base = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base)
    taps = torch.arange(-width, width + orig, dtype=torch.float64)  # input offsets within one stride
    phase = torch.arange(new, dtype=torch.float64)[:, None] * orig / new  # output position inside the stride
    t = (taps[None, :] - phase) * (base / orig)  # distance in units of kernel zero crossings
    t = t.clamp(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / (2 * lowpass_filter_width)) ** 2
    arg = t * math.pi
    sinc = torch.where(arg == 0, torch.ones_like(arg), torch.sin(arg) / torch.where(arg == 0, torch.ones_like(arg), arg))
    kernel = sinc * window * (base / orig)
    return kernel, width


def sinc_kernel(
    orig_sr: int, new_sr: int, lowpass_filter_width: int = 6, rolloff: float = 0.99
) -> tuple[torch.Tensor, int, int, int]:
    """The polyphase kernel ``(n, 2W + o)`` in float64 on CPU, with ``W``, ``o`` and ``n`` (see module docstring)."""
    g = math.gcd(int(orig_sr), int(new_sr))
    o, n = int(orig_sr) // g, int(new_sr) // g
    kernel, width = _kernel_cpu(o, n, int(lowpass_filter_width), float(rolloff))
    return kernel, width, o, n


def resample(
    x: torch.Tensor, orig_sr: int, new_sr: int, lowpass_filter_width: int = 6, rolloff: float = 0.99
) -> torch.Tensor:
    """Resample the last axis: ``(..., N) @ orig_sr -> (..., ceil(N*new_sr/orig_sr)) @ new_sr``.

    Computed in float32 (float64 if ``x`` is float64) on ``x``'s device; returned in ``x``'s dtype. Identity when
    the rates are equal.
    """
    if int(orig_sr) == int(new_sr):
        return x
    kernel, width, o, n = sinc_kernel(orig_sr, new_sr, lowpass_filter_width, rolloff)
    lead, length = x.shape[:-1], x.shape[-1]
    work_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    flat = x.reshape(-1, 1, length).to(work_dtype)
    flat = F.pad(flat, (width, width + o))
    weight = kernel.to(device=x.device, dtype=work_dtype)[:, None, :]  # (n, 1, 2W + o)
    phases = F.conv1d(flat, weight, stride=o)  # (B, n, frames)
    out = phases.transpose(1, 2).reshape(flat.shape[0], -1)[:, : resampled_length(length, orig_sr, new_sr)]
    return out.reshape(*lead, out.shape[-1]).to(x.dtype)
