"""Multi-resolution log-mel L1 distance between a generated and a reference waveform.

The evaluation metric of ``mode=eval`` and of the periodic audio eval (``eval/mel_distance``), in the
spirit of auraloss' ``MelSTFTLoss`` that VALL-E's evaluation uses, written with ``torch.stft`` only.

Formula. Both signals are averaged to mono and cut to the shorter length ``N`` (a generated utterance
is rarely as long as its reference; the cut compares what both contain). For every resolution
``r`` with FFT size ``n_r`` in ``fft_sizes`` (default 512, 1024, 2048), hop ``n_r / 4`` and a Hann window
of ``n_r`` samples (frames centred, zero-padded ends)::

    S_r(x)  = |STFT_{n_r}(x)|                       magnitude spectrogram (freqs x frames)
    M_r(x)  = F_r · S_r(x)                          F_r: ``n_mels`` triangular mel filters (0 .. sr/2)
    d_r     = mean_{mel, frame} | ln(M_r(x) + eps) - ln(M_r(y) + eps) |
    D(x, y) = (1 / R) · sum_r d_r                   (R resolutions; eps = 1e-5)

So ``D`` is 0 for identical inputs, symmetric, non-negative, and grows with any spectral difference
(pitch, timbre, added noise); it ignores the tail the shorter signal lacks. Signals shorter than an FFT
size are zero-padded to it. Lower is better; it is a distance between log-magnitudes (nats), not dB.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from audiotrain.tracking.samples import _mel_fb

FFT_SIZES = (512, 1024, 2048)
N_MELS = 80
EPS = 1e-5


def _mono(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().float().cpu()
    if t.dim() == 0:
        raise ValueError("mel_distance needs waveforms, got a scalar")
    if t.dim() > 1:  # (channels, samples) or (1, channels, samples): average every leading axis
        t = t.reshape(-1, t.shape[-1]).mean(dim=0)
    return t


def log_mel(x: torch.Tensor, sr: int, n_fft: int, n_mels: int = N_MELS, eps: float = EPS) -> torch.Tensor:
    """``ln(F · |STFT(x)| + eps)``, (n_mels, frames), for a mono signal of at least ``n_fft`` samples."""
    spec = torch.stft(x, n_fft, n_fft // 4, window=torch.hann_window(n_fft), center=True, pad_mode="constant",
                      return_complex=True).abs()
    fb = _mel_fb(n_fft // 2 + 1, n_mels, sr)
    return torch.log(fb.T @ spec + eps)


def mel_distance(hyp: torch.Tensor | np.ndarray, ref: torch.Tensor | np.ndarray, sr: int,
                 fft_sizes: Sequence[int] = FFT_SIZES, n_mels: int = N_MELS, eps: float = EPS) -> float:
    """Multi-resolution log-mel L1 distance ``D(hyp, ref)`` (see the module docstring); both at ``sr``."""
    x, y = _mono(hyp), _mono(ref)
    n = min(x.numel(), y.numel())
    if n == 0:
        raise ValueError("mel_distance needs two non-empty waveforms")
    x, y = x[:n], y[:n]
    total = 0.0
    for n_fft in fft_sizes:
        xs, ys = x, y
        if n < n_fft:
            xs = torch.nn.functional.pad(x, (0, n_fft - n))
            ys = torch.nn.functional.pad(y, (0, n_fft - n))
        total += float((log_mel(xs, sr, n_fft, n_mels, eps) - log_mel(ys, sr, n_fft, n_mels, eps)).abs().mean())
    return total / len(fft_sizes)


def resample(x: torch.Tensor, sr_from: int, sr_to: int) -> torch.Tensor:
    """Bring a waveform (..., samples) to another rate: torchaudio's sinc resampler when installed,
    else linear interpolation (only used when a backbone's generated and reference rates differ)."""
    if sr_from == sr_to:
        return x
    try:
        import torchaudio.functional as AF

        return AF.resample(x, int(sr_from), int(sr_to))
    except ImportError:
        n = max(1, round(x.shape[-1] * sr_to / sr_from))
        flat = x.reshape(1, -1, x.shape[-1]).float()
        out = torch.nn.functional.interpolate(flat, size=n, mode="linear", align_corners=False)
        return out.reshape(*x.shape[:-1], n)
