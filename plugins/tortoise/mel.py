"""TorToiSe's mel front end (spec §2.5) from ``torch.stft``, and a Griffin-Lim inverse for previews.

What DL-Art-School's ``torch_mel_spectrogram`` injector and TorToiSe's ``TorchMelSpectrogram`` compute, written
without torchaudio (it does not import here): ``torchaudio.transforms.MelSpectrogram(n_fft=1024, hop_length=256,
win_length=1024, power=2, normalized=False, sample_rate=22050, f_min=0, f_max=8000, n_mels=80, norm="slaney")``,
then ``log(clamp(mel, 1e-5))``, then each band divided by its ``mel_norms`` value (80 floats, ``mel_norms.pth``).

- STFT: periodic Hann window of 1024, centred frames (the wave reflect-padded by 512 on each side), one-sided,
  |X|² → ``1 + T // 256`` frames (255995 samples → 1000, 44000 → 172).
- Filterbank (n_fft/2+1 = 513 bins × 80 bands): bin frequencies ``linspace(0, sr/2, 513)``; 82 band edges evenly
  spaced on the mel scale between fmin and fmax; triangles ``max(0, min(rising, falling))``; ``norm="slaney"``
  divides band m by ``(f[m+2] − f[m]) / 2`` (area normalisation).
- Mel scale: **HTK** (``2595·log10(1 + f/700)``) by default — both upstream calls pass ``norm="slaney"`` but no
  ``mel_scale``, and torchaudio's default ``mel_scale`` is ``"htk"``; this is what the released DVAE and
  conditioning encoder were trained on. ``mel_scale="slaney"`` (linear below 1 kHz, logarithmic above; librosa's
  default, ``htk=False``) is available but is not what TorToiSe computes.

``MelSpectrogram(mel_norms=None)``: ``None`` → ones (the tiny models, no file); a tensor of 80 values; or a path to
``mel_norms.pth``, read as data (:func:`.checkpoint.load_mel_norms`). ``forward(wav (B, T) | (B, 1, T))`` →
(B, 80, frames) float32. ``invert(mel, iterations)`` → wave: undo the norms and the log, map the mel power back to
linear bins with the filterbank's pseudo-inverse (negatives clipped), take the square root, then Griffin-Lim
(momentum 0.99, phases from a fixed seed) with the same STFT — for listening to previews, not for quality.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

SAMPLE_RATE = 22050
N_FFT = 1024
HOP = 256
WIN = 1024
N_MELS = 80
F_MIN = 0.0
F_MAX = 8000.0
LOG_FLOOR = 1e-5
MEL_SCALES = ("htk", "slaney")

# the slaney scale: linear 0–1 kHz (200/3 Hz per mel), logarithmic above (27 mels per factor 6.4)
_SP, _LOG_HZ, _LOG_MEL, _LOG_STEP = 200.0 / 3, 1000.0, 15.0, math.log(6.4) / 27.0


def hz_to_mel(f: torch.Tensor, scale: str = "htk") -> torch.Tensor:
    """Hz → mel on the ``htk`` or ``slaney`` scale."""
    f = torch.as_tensor(f, dtype=torch.float64)
    if scale == "htk":
        return 2595.0 * torch.log10(1.0 + f / 700.0)
    return torch.where(f >= _LOG_HZ, _LOG_MEL + torch.log(f.clamp(min=_LOG_HZ) / _LOG_HZ) / _LOG_STEP, f / _SP)


def mel_to_hz(m: torch.Tensor, scale: str = "htk") -> torch.Tensor:
    """mel → Hz on the ``htk`` or ``slaney`` scale."""
    m = torch.as_tensor(m, dtype=torch.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    return torch.where(m >= _LOG_MEL, _LOG_HZ * torch.exp(_LOG_STEP * (m - _LOG_MEL)), m * _SP)


def mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS, f_min: float = F_MIN,
                   f_max: float = F_MAX, mel_scale: str = "htk", norm: str | None = "slaney") -> torch.Tensor:
    """(n_fft // 2 + 1, n_mels) float32 triangular filters (module doc), computed in float64."""
    if mel_scale not in MEL_SCALES:
        raise ValueError(f"mel_scale={mel_scale!r} is unknown; use one of {MEL_SCALES}")
    freqs = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    lo, hi = hz_to_mel(torch.tensor(float(f_min)), mel_scale), hz_to_mel(torch.tensor(float(f_max)), mel_scale)
    edges = mel_to_hz(torch.linspace(float(lo), float(hi), n_mels + 2, dtype=torch.float64), mel_scale)
    widths = edges[1:] - edges[:-1]
    slopes = edges[None, :] - freqs[:, None]  # (bins, n_mels + 2)
    rising = -slopes[:, :-2] / widths[:-1]
    falling = slopes[:, 2:] / widths[1:]
    fb = torch.clamp(torch.minimum(rising, falling), min=0.0)
    if norm == "slaney":
        fb = fb * (2.0 / (edges[2:n_mels + 2] - edges[:n_mels]))[None, :]
    elif norm is not None:
        raise ValueError(f"norm={norm!r} is unknown; use 'slaney' or None")
    return fb.float()


def num_frames(samples: int, hop: int = HOP) -> int:
    """Frames of a centred STFT of ``samples`` samples: ``1 + samples // hop``."""
    return 1 + int(samples) // hop


class MelSpectrogram(nn.Module):
    """Wave (22.05 kHz) → TorToiSe's normalised log-mel (module doc). Buffers: ``window``, ``fb``, ``mel_norms``."""

    def __init__(self, mel_norms: torch.Tensor | str | Path | None = None, *, mel_scale: str = "htk",
                 option: str | None = None) -> None:
        super().__init__()
        if isinstance(mel_norms, (str, Path)):
            from .checkpoint import load_mel_norms

            mel_norms = load_mel_norms(mel_norms, option=option)
        norms = torch.ones(N_MELS) if mel_norms is None else torch.as_tensor(mel_norms, dtype=torch.float32).flatten()
        if norms.numel() != N_MELS:
            raise ValueError(f"mel_norms holds {norms.numel()} values; TorToiSe's mel front end needs {N_MELS}")
        self.mel_scale = mel_scale
        self.register_buffer("window", torch.hann_window(WIN), persistent=False)
        self.register_buffer("fb", mel_filterbank(mel_scale=mel_scale), persistent=False)
        self.register_buffer("mel_norms", norms.float(), persistent=False)

    def _stft(self, wav: torch.Tensor) -> torch.Tensor:
        return torch.stft(wav, N_FFT, hop_length=HOP, win_length=WIN, window=self.window, center=True,
                          pad_mode="reflect", normalized=False, onesided=True, return_complex=True)

    def power_mel(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, T) → (B, 80, frames): the mel power before the log (torchaudio's MelSpectrogram output)."""
        power = self._stft(wav.float()).abs().pow(2)
        return torch.matmul(power.transpose(-1, -2), self.fb).transpose(-1, -2)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() == 3:
            wav = wav.squeeze(1)
        if wav.dim() == 1:
            wav = wav.unsqueeze(0)
        mel = torch.log(torch.clamp(self.power_mel(wav), min=LOG_FLOOR))
        return mel / self.mel_norms[None, :, None]

    @torch.no_grad()
    def invert(self, mel: torch.Tensor, iterations: int = 32, momentum: float = 0.99, seed: int = 0) -> torch.Tensor:
        """(B, 80, frames) normalised log-mel → (B, (frames − 1)·256) wave by Griffin-Lim (module doc)."""
        if mel.dim() == 2:
            mel = mel.unsqueeze(0)
        power_mel = torch.exp(mel.float() * self.mel_norms[None, :, None])
        linear = torch.matmul(torch.linalg.pinv(self.fb.t()), power_mel).clamp(min=0.0)  # (B, bins, frames)
        magnitude = linear.sqrt()
        length = (mel.size(-1) - 1) * HOP
        gen = torch.Generator(device="cpu").manual_seed(seed)
        angles = torch.exp(2j * math.pi * torch.rand(magnitude.shape, generator=gen)).to(magnitude.device)
        previous = torch.zeros_like(angles)
        for _ in range(iterations):
            wav = torch.istft(magnitude * angles, N_FFT, hop_length=HOP, win_length=WIN, window=self.window,
                              center=True, length=length)
            rebuilt = self._stft(wav)
            angles = rebuilt - (momentum / (1 + momentum)) * previous
            angles = angles / angles.abs().clamp(min=1e-16)
            previous = rebuilt
        return torch.istft(magnitude * angles, N_FFT, hop_length=HOP, win_length=WIN, window=self.window,
                           center=True, length=length)
