"""Synthetic test signals, made with numpy: tones of three timbres, a kick and a noise burst, and a peak
normaliser. Genre-neutral building blocks: a plugin's demo data and tests assemble them into whatever
their format needs."""
from __future__ import annotations

import numpy as np

TIMBRES = ("square", "harmonic", "plucked")
MAJOR, MINOR = [0, 2, 4, 5, 7, 9, 11], [0, 2, 3, 5, 7, 8, 10]  # scale degrees in semitones


def song_key(rng: np.random.Generator) -> tuple[int, int, bool, list[int]]:
    """A synthetic song's ``(bpm, root semitone 0-11, minor, scale degrees)``, drawn in that order from ``rng``."""
    bpm = int(rng.choice([90, 100, 120, 128]))
    root = int(rng.integers(0, 12))
    minor = bool(rng.integers(0, 2))
    return bpm, root, minor, MINOR if minor else MAJOR


def tone(freq: float, n: int, sr: int, timbre: str, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of one note at ``freq`` Hz, with its envelope (float32):

    ``square`` — a square wave plus its octave, fast attack and slow decay; ``harmonic`` — five decaying
    harmonics (a struck string); ``plucked`` — a Karplus-Strong string seeded from ``rng``."""
    t = np.arange(n) / sr
    if timbre == "square":
        x = 0.6 * np.sign(np.sin(2 * np.pi * freq * t)) * 0.5 + 0.5 * np.sin(2 * np.pi * freq * 2 * t)
        env = np.minimum(1.0, t * 50) * np.exp(-t * 2.0)
    elif timbre == "harmonic":
        x = sum(np.sin(2 * np.pi * freq * k * t) / k ** 1.5 for k in range(1, 6))
        env = np.minimum(1.0, t * 200) * np.exp(-t * 4.0)
    elif timbre == "plucked":
        period = max(2, int(sr / freq))
        buf = rng.uniform(-1, 1, period)
        x = np.empty(n)
        for i in range(n):
            x[i] = buf[i % period]
            buf[i % period] = 0.5 * (buf[i % period] + buf[(i + 1) % period]) * 0.996
        env = np.ones(n)
    else:
        raise ValueError(f"timbre={timbre!r} is unknown: use one of {', '.join(TIMBRES)}.")
    return (x * env).astype(np.float32)


def kick(n: int, sr: int) -> np.ndarray:
    """A falling-pitch sine thump (``n`` samples)."""
    t = np.arange(n) / sr
    return (np.sin(2 * np.pi * (60 + 80 * np.exp(-t * 30)) * t) * np.exp(-t * 25) * 0.5).astype(np.float32)


def noise_burst(n: int, sr: int, rng: np.random.Generator, level: float = 0.08) -> np.ndarray:
    """A fast-decaying burst of white noise (a hi-hat)."""
    return (rng.normal(0, level, n) * np.exp(-np.arange(n) / sr * 150)).astype(np.float32)


def normalise(audio: np.ndarray, peak: float = 0.9) -> np.ndarray:
    """Scaled down so its largest sample is at most ``peak`` (never scaled up)."""
    return (audio / max(1.0, np.abs(audio).max() / peak)).astype(np.float32)
