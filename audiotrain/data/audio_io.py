"""Audio decoding and shaping: soundfile to decode (wav/flac/ogg/mp3), soxr to resample.

Every failure is an :class:`AudioError` whose message is the reason a person reads in the report.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

AUDIO_EXTENSIONS = (".mp3", ".wav", ".flac", ".ogg")


class AudioError(ValueError):
    """An audio file cannot be used; the message says why in a few words."""


@dataclass(frozen=True)
class AudioSpec:
    """How a plugin wants its audio: rate, channels, length bounds and the silence rule."""

    sample_rate: int = 48000
    channels: int = 2
    min_duration: float = 3.0
    max_duration: float = 240.0
    silence_threshold: float = 0.95  # fraction of exactly-zero samples (all channels) that counts as silent

    def cache_fields(self) -> dict:
        return {"sr": self.sample_rate, "ch": self.channels, "min": self.min_duration, "max": self.max_duration}


@dataclass(frozen=True)
class StreamSpec(AudioSpec):
    """One audio stream of a row (a role such as ``mix`` or ``vocal``): its audio spec, and whether a row
    without it is unusable (``required``) or simply lacks that stream's features (optional)."""

    required: bool = True


def decode(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode a file to float32 (channels, samples) at its own sample rate."""
    import soundfile as sf

    p = Path(path)
    if not p.is_file():
        raise AudioError("audio file not found")
    try:
        with _quiet_stderr():  # libmpg123 prints resync chatter for corrupt mp3s straight to fd 2
            data, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except Exception:  # libsndfile reports corrupt/unsupported files in many (misleading) ways
        raise AudioError(f"cannot decode audio: the {p.suffix or 'file'} file is corrupt or not audio") from None
    if data.size == 0:
        raise AudioError("audio file has no samples")
    if not np.isfinite(data).all():
        raise AudioError("audio contains NaN or infinite samples")
    return np.ascontiguousarray(data.T), int(sr)


@contextlib.contextmanager
def _quiet_stderr():
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def resample(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample (channels, samples) with soxr's high-quality converter."""
    if sr_in == sr_out:
        return audio
    import soxr

    out = soxr.resample(audio.T, sr_in, sr_out, quality="HQ")
    return np.ascontiguousarray(np.asarray(out, dtype=np.float32).T)


def to_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """Mono → duplicated, more channels → the first ``channels`` (stereo) or their mean (mono)."""
    c = audio.shape[0]
    if c == channels:
        return audio
    if channels == 1:
        return audio.mean(axis=0, keepdims=True)
    if c == 1:
        return np.repeat(audio, channels, axis=0)
    if c > channels:
        return audio[:channels]
    return np.concatenate([audio, np.repeat(audio[-1:], channels - c, axis=0)], axis=0)


def is_silent(audio: np.ndarray, threshold: float) -> bool:
    """True when more than ``threshold`` of the time steps are exactly zero on every channel."""
    zero_steps = np.all(audio == 0.0, axis=0)
    return float(zero_steps.mean()) > threshold


def load_audio(path: str | Path, spec: AudioSpec) -> tuple[np.ndarray, int]:
    """Decode, mix to ``spec.channels``, resample, clamp, check silence, pad to min and cap at max.

    Returns (audio (channels, samples) float32 at ``spec.sample_rate``, original length in samples
    at the target rate before padding, capped at max).
    """
    audio, sr = decode(path)
    audio = to_channels(audio, spec.channels)
    if is_silent(audio, spec.silence_threshold):
        raise AudioError(f"silent ({spec.silence_threshold:.0%}+ of the samples are exactly zero)")
    audio = resample(audio, sr, spec.sample_rate)
    np.clip(audio, -1.0, 1.0, out=audio)
    max_len = int(round(spec.max_duration * spec.sample_rate))
    audio = audio[:, :max_len]
    length = audio.shape[1]
    min_len = int(round(spec.min_duration * spec.sample_rate))
    if length < min_len:
        audio = np.pad(audio, ((0, 0), (0, min_len - length)))
    return np.ascontiguousarray(audio, dtype=np.float32), length


def content_hash(path: str | Path) -> str:
    """sha256 of the file's bytes (the audio part of a feature-cache key)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:24]
