"""Write an audio sample as a wav plus a log-mel spectrogram png a person can look at."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch


def mel_image(wav: np.ndarray, sr: int, n_mels: int = 80) -> np.ndarray:
    """(channels, samples) → log-mel (n_mels, frames) of the channel mean, via torch.stft."""
    x = torch.from_numpy(np.asarray(wav, dtype=np.float32).mean(axis=0))
    n_fft = 1024 if sr >= 22050 else 512
    hop = n_fft // 4
    if x.numel() < n_fft:
        x = torch.nn.functional.pad(x, (0, n_fft - x.numel()))
    spec = torch.stft(x, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True).abs() ** 2
    fb = _mel_fb(n_fft // 2 + 1, n_mels, sr)
    mel = fb.T @ spec
    return (10 * torch.log10(mel.clamp_min(1e-10))).numpy()


def _mel_fb(n_freqs: int, n_mels: int, sr: int) -> torch.Tensor:
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    mels = np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2), n_mels + 2)
    hz = 700.0 * (10 ** (mels / 2595.0) - 1.0)
    freqs = np.linspace(0, sr / 2, n_freqs)
    fb = np.zeros((n_freqs, n_mels), dtype=np.float32)
    for m in range(n_mels):
        lo, c, hi = hz[m], hz[m + 1], hz[m + 2]
        up = (freqs - lo) / max(c - lo, 1e-9)
        down = (hi - freqs) / max(hi - c, 1e-9)
        fb[:, m] = np.clip(np.minimum(up, down), 0, None)
    return torch.from_numpy(fb)


def write_sample(wav: np.ndarray, sr: int, stem: Path, title: str = "") -> list[Path]:
    """Write ``stem.wav`` and ``stem.png``; returns both paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import soundfile as sf

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    wav = np.clip(np.asarray(wav, dtype=np.float32), -1.0, 1.0)
    sf.write(str(stem.with_suffix(".wav")), wav.T, sr)
    img = mel_image(wav, sr)
    fig, ax = plt.subplots(figsize=(8, 3), dpi=100)
    dur = wav.shape[-1] / sr
    ax.imshow(img, origin="lower", aspect="auto", extent=(0, dur, 0, img.shape[0]), cmap="magma")
    ax.set_xlabel("seconds")
    ax.set_ylabel("mel bin")
    ax.set_title(title or stem.name, fontsize=9)
    fig.tight_layout()
    fig.savefig(str(stem.with_suffix(".png")))
    plt.close(fig)
    return [stem.with_suffix(".wav"), stem.with_suffix(".png")]


def tracks(audio: Any) -> dict[str, Any]:
    """A rendering as ``{track name: audio}``, the main track first under "" (one tensor or array is that track;
    a mapping of several, as a song's mix, accompaniment and vocals, keeps its order: its first is the main)."""
    from collections.abc import Mapping

    if not isinstance(audio, Mapping):
        return {"": audio}
    items = list(audio.items())
    if not items:
        raise ValueError("a rendering of no track at all")
    return {"": items[0][1], **{str(k): v for k, v in items[1:]}}


def track_stem(stem: Path, name: str) -> Path:
    """Where a track is written: the main one at ``stem``, another beside it as ``<stem>_<name>``."""
    return stem if not name else stem.with_name(f"{stem.name}_{name}")
