"""Synthetic songs in SongGen's folder format, for the demo and the tests: ``X.wav`` (the mix), ``X_vocal.wav``
(a sung-like melody: a harmonic tone with vibrato, note by note), ``X_acc.wav`` (bass + chords + a kick),
``X_prompt.txt`` (a description of what was synthesised: tempo, key, mode, instruments) and ``X_lyrics.txt``.
Written at 44.1 kHz stereo, so reading them exercises the resampling to 16 kHz mono that X-Codec needs."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from audiotrain.data.synth import kick, normalise, song_key, tone

SR = 44100
NOTE_NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
LYRICS = ["la la la, sing along\nthe night is young", "hold on, hold on\nwe are the song",
          "walking by the river\nthe water knows", "run, run, run\ninto the sun"]


def _voice(freqs: list[float], note: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(note) / SR
    parts = []
    for f in freqs:
        vibrato = 1 + 0.01 * np.sin(2 * np.pi * 5.5 * t)
        phase = 2 * np.pi * np.cumsum(f * vibrato) / SR
        env = np.minimum(1, t / 0.03) * np.minimum(1, (t[::-1]) / 0.05)
        parts.append(env * (np.sin(phase) + 0.4 * np.sin(2 * phase) + 0.2 * np.sin(3 * phase)))
    return np.concatenate(parts) * 0.3 + 0.002 * rng.standard_normal(note * len(freqs))


def write_song(folder: Path, name: str, seconds: float, seed: int, lyrics: str | None = None) -> Path:
    """One song with stems and texts; returns the mix's path."""
    rng = np.random.default_rng(seed)
    bpm, root, minor, scale = song_key(rng)
    n = int(seconds * SR)
    beat = int(SR * 60 / bpm)
    notes = max(1, n // beat + 1)
    base = 220.0 * 2 ** (root / 12)
    melody = [base * 2 ** (scale[int(rng.integers(0, 7))] / 12) for _ in range(notes)]
    vocal = _voice(melody, beat, rng)[:n]
    acc = np.zeros(n)
    for i in range(0, n, beat):
        m = min(beat, n - i)
        acc[i:i + m] += 0.25 * tone(base / 2, m, SR, "harmonic", rng)
        acc[i:i + m] += 0.15 * tone(base * 2 ** (scale[2] / 12), m, SR, "plucked", rng)
        k = kick(min(m, SR // 8), SR)
        acc[i:i + len(k)] += 0.5 * k
    mix = normalise(vocal + acc)
    folder.mkdir(parents=True, exist_ok=True)
    import soundfile as sf

    for suffix, audio in (("", mix), ("_vocal", normalise(vocal)), ("_acc", normalise(acc))):
        sf.write(str(folder / f"{name}{suffix}.wav"), np.stack([audio, audio], axis=1).astype(np.float32), SR)
    key = f"{NOTE_NAMES[root]} {'minor' if minor else 'major'}"
    (folder / f"{name}_prompt.txt").write_text(
        f"A {'melancholic' if minor else 'bright'} pop song in {key} at {bpm} bpm with a female vocal, bass, "
        f"plucked chords and a steady kick drum.")
    if lyrics is None:
        lyrics = LYRICS[seed % len(LYRICS)]
    if lyrics:
        (folder / f"{name}_lyrics.txt").write_text(lyrics)
    return folder / f"{name}.wav"


def write_song_folder(folder: Path, count: int = 4, seconds: float = 4.0) -> Path:
    """``count`` songs named song_01 ... with stems, descriptions and lyrics."""
    for i in range(count):
        write_song(folder, f"song_{i + 1:02d}", seconds, seed=i)
    return folder
