"""Log-mel front end of ACE-Step's music vocoder / DCAE (44.1 kHz, 128 Slaney mel bins, hop 512).

``LogMelSpectrogram(x (..., N)) -> (..., n_mels, N/hop)``:

1. reflect-pad ``(win-hop)//2`` left and ``(win-hop+1)//2`` right (768/768 for 2048/512), then an STFT with
   ``center=False``, Hann window (periodic, length ``win_length``), ``n_fft`` 2048, hop 512 -> exactly ``N/hop``
   frames when N is a multiple of ``hop``;
2. magnitude ``sqrt(re^2 + im^2 + 1e-6)``;
3. Slaney-scale triangular mel filterbank with Slaney area normalisation (each filter integrates to 1 over Hz),
   ``f_min`` 40 Hz, ``f_max`` 16 kHz: ``mel = fb^T @ |X|``;
4. ``log(clamp(mel, min=1e-5))``.

The STFT and the mel product run in float32 whatever the input dtype; the result is cast back to the input dtype.
The filterbank is computed here in float64 with numpy (no torchaudio), then stored as a float32 buffer.
State-dict keys (persistent buffers): ``spectrogram.window`` ``[win_length]`` and ``mel_scale.fb`` ``[n_fft//2+1, n_mels]``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "hz_to_mel_slaney",
    "mel_to_hz_slaney",
    "slaney_mel_points",
    "slaney_mel_filterbank",
    "LinearSpectrogram",
    "MelScale",
    "LogMelSpectrogram",
]

# Slaney (Auditory Toolbox) mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above.
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP  # 15 mels
_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel_slaney(freq: np.ndarray | float) -> np.ndarray:
    """Hz -> Slaney mels (array or scalar, float64)."""
    f = np.asarray(freq, dtype=np.float64)
    lin = f / _F_SP
    log = _MIN_LOG_MEL + np.log(np.maximum(f, 1e-12) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(f >= _MIN_LOG_HZ, log, lin)


def mel_to_hz_slaney(mels: np.ndarray | float) -> np.ndarray:
    """Slaney mels -> Hz (array or scalar, float64); inverse of :func:`hz_to_mel_slaney`."""
    m = np.asarray(mels, dtype=np.float64)
    lin = m * _F_SP
    log = _MIN_LOG_HZ * np.exp(_LOGSTEP * (m - _MIN_LOG_MEL))
    return np.where(m >= _MIN_LOG_MEL, log, lin)


def slaney_mel_points(n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """The ``n_mels + 2`` filter edge frequencies in Hz, equally spaced in Slaney mels. Filter m spans
    ``[pts[m], pts[m+2]]`` and peaks at ``pts[m+1]``."""
    m = np.linspace(float(hz_to_mel_slaney(f_min)), float(hz_to_mel_slaney(f_max)), n_mels + 2)
    return mel_to_hz_slaney(m)


def slaney_mel_filterbank(
    n_freqs: int = 1025,
    sample_rate: int = 44100,
    n_mels: int = 128,
    f_min: float = 40.0,
    f_max: float = 16000.0,
) -> np.ndarray:
    """Triangular Slaney mel filterbank with Slaney area normalisation, shape ``(n_freqs, n_mels)`` float64.

    FFT bin k sits at ``k * (sample_rate // 2) / (n_freqs - 1)`` Hz. Filter m rises linearly from 0 at
    ``pts[m]`` to its peak at ``pts[m+1]`` and falls to 0 at ``pts[m+2]``; the peak height is
    ``2 / (pts[m+2] - pts[m])`` so the triangle has unit area in Hz.
    """
    all_freqs = np.linspace(0.0, float(sample_rate // 2), n_freqs)
    pts = slaney_mel_points(n_mels, f_min, f_max)
    lo, mid, hi = pts[:-2], pts[1:-1], pts[2:]
    rising = (all_freqs[:, None] - lo[None, :]) / (mid - lo)[None, :]
    falling = (hi[None, :] - all_freqs[:, None]) / (hi - mid)[None, :]
    fb = np.maximum(0.0, np.minimum(rising, falling))
    return fb * (2.0 / (hi - lo))[None, :]


class LinearSpectrogram(nn.Module):
    """Magnitude STFT ``(..., N) -> (..., n_fft//2+1, frames)`` with the reflect-pad / ``center=False`` framing
    described in the module docstring. Buffer ``window`` ``[win_length]`` (periodic Hann)."""

    def __init__(self, n_fft: int = 2048, win_length: int = 2048, hop_length: int = 512) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.win_length = win_length
        self.hop_length = hop_length
        # computed on CPU and copied by value: also works (cheaply) when built under a meta device context
        window = torch.hann_window(win_length, device="cpu", dtype=torch.float32).numpy()
        self.register_buffer("window", torch.tensor(window), persistent=True)

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for ``num_samples`` input samples (``num_samples // hop`` for 2048/512)."""
        padded = num_samples + self.win_length - self.hop_length
        return (padded - self.n_fft) // self.hop_length + 1

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        lead, n = y.shape[:-1], y.shape[-1]
        dtype = y.dtype
        flat = y.reshape(-1, n).to(torch.float32)
        pad_left = (self.win_length - self.hop_length) // 2
        pad_right = (self.win_length - self.hop_length + 1) // 2
        flat = F.pad(flat.unsqueeze(1), (pad_left, pad_right), mode="reflect").squeeze(1)
        spec = torch.stft(
            flat,
            self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window.to(device=flat.device, dtype=torch.float32),
            center=False,
            normalized=False,
            onesided=True,
            return_complex=True,
        )
        mag = torch.sqrt(spec.real.square() + spec.imag.square() + 1e-6)  # 5x faster than view_as_real + pow + sum
        return mag.reshape(*lead, *mag.shape[-2:]).to(dtype)


class MelScale(nn.Module):
    """``(..., n_freqs, frames) -> (..., n_mels, frames)`` by the Slaney filterbank buffer ``fb`` ``[n_freqs, n_mels]``."""

    def __init__(
        self, n_mels: int = 128, sample_rate: int = 44100, f_min: float = 40.0, f_max: float = 16000.0, n_stft: int = 1025
    ) -> None:
        super().__init__()
        fb = slaney_mel_filterbank(n_stft, sample_rate, n_mels, f_min, f_max)
        self.register_buffer("fb", torch.tensor(fb, dtype=torch.float32), persistent=True)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        dtype = spec.dtype
        out = torch.matmul(spec.to(torch.float32).transpose(-1, -2), self.fb.to(torch.float32)).transpose(-1, -2)
        return out.to(dtype)


class LogMelSpectrogram(nn.Module):
    """Waveform -> natural-log mel: ``(..., N) -> (..., n_mels, N // hop)``; a ``(B, 1, N)`` input gives
    ``(B, n_mels, frames)`` (the singleton channel is dropped, as the vocoder expects mono calls).

    Submodules ``spectrogram`` (:class:`LinearSpectrogram`) and ``mel_scale`` (:class:`MelScale`).
    """

    def __init__(
        self,
        sample_rate: int = 44100,
        n_fft: int = 2048,
        win_length: int = 2048,
        hop_length: int = 512,
        n_mels: int = 128,
        f_min: float = 40.0,
        f_max: float | None = 16000.0,
    ) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.spectrogram = LinearSpectrogram(n_fft, win_length, hop_length)
        self.mel_scale = MelScale(n_mels, sample_rate, f_min, f_max or sample_rate // 2, n_fft // 2 + 1)

    @staticmethod
    def compress(x: torch.Tensor) -> torch.Tensor:
        """``log(clamp(x, 1e-5))``."""
        return torch.log(torch.clamp(x, min=1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3 and x.shape[1] == 1:
            x = x.squeeze(1)
        return self.compress(self.mel_scale(self.spectrogram(x)))
