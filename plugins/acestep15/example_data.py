"""Synthetic songs in ACE-Step 1.5's folder layout, for a first run, the demo and the tests (nothing downloaded):
``X.wav`` (48 kHz stereo: a bass line, plucked chords, a melody, a kick and hi-hats at the song's tempo),
``X.caption.txt`` (what was synthesised), ``X.lyrics.txt`` (sung songs; the last one is an instrumental without
one) and ``X.json`` (bpm, keyscale, timesignature, language)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from audiotrain.data.synth import kick, noise_burst, normalise, song_key, tone

SR = 48000
NOTES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
LYRICS = ["[verse]\nlights on the water\nwe drift along", "[chorus]\nhold on, hold on\nthe night is ours",
          "[verse]\nwalking through the city\nthe rain keeps time", "[chorus]\nrun into the morning\nsing it loud"]
TIMBRES = ("harmonic", "square", "plucked")


def song_audio(seconds: float, seed: int) -> tuple[np.ndarray, dict]:
    """``(audio (N, 2) float32, metadata)`` of one synthetic song."""
    rng = np.random.default_rng(seed)
    bpm, root, minor, scale = song_key(rng)
    n = int(seconds * SR)
    beat = int(SR * 60 / bpm)
    base = 110.0 * 2 ** (root / 12)
    lead = TIMBRES[seed % len(TIMBRES)]
    left, right = np.zeros(n, np.float32), np.zeros(n, np.float32)
    for b, i in enumerate(range(0, n, beat)):
        m = min(beat, n - i)
        bass = 0.3 * tone(base, m, SR, "harmonic", rng)
        chord = 0.12 * tone(base * 2 * 2 ** (scale[(b * 2) % 7] / 12), m, SR, "plucked", rng)
        melody = 0.2 * tone(base * 4 * 2 ** (scale[int(rng.integers(0, 7))] / 12), m, SR, lead, rng)
        left[i:i + m] += bass + chord + 0.7 * melody
        right[i:i + m] += bass + 0.7 * chord + melody
        k = kick(min(m, SR // 8), SR)
        left[i:i + len(k)] += 0.5 * k
        right[i:i + len(k)] += 0.5 * k
        h = min(m, SR // 20)
        off = i + beat // 2
        if off + h <= n:
            hat = noise_burst(h, SR, rng)
            left[off:off + h] += hat
            right[off:off + h] += hat
    audio = np.stack([normalise(left), normalise(right)], axis=1)
    key = f"{NOTES[root]} {'minor' if minor else 'major'}"
    meta = {"bpm": bpm, "keyscale": key, "timesignature": "4", "lead": lead, "minor": minor}
    return audio, meta


def write_song(folder: Path, name: str, seconds: float, seed: int, lyrics: str | None) -> Path:
    """One song with its caption, lyrics (None: an instrumental, no lyrics file) and JSON metadata."""
    import soundfile as sf

    audio, meta = song_audio(seconds, seed)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.wav"
    sf.write(str(path), audio, SR)
    mood = "melancholic" if meta["minor"] else "bright"
    (folder / f"{name}.caption.txt").write_text(
        f"a {mood} electronic pop track in {meta['keyscale']} with a {meta['lead']} lead, plucked chords, "
        f"a round bass, kick and hi-hats", encoding="utf-8")
    if lyrics is not None:
        (folder / f"{name}.lyrics.txt").write_text(lyrics, encoding="utf-8")
    (folder / f"{name}.json").write_text(json.dumps(
        {"bpm": meta["bpm"], "keyscale": meta["keyscale"], "timesignature": meta["timesignature"],
         "language": "en" if lyrics is not None else "unknown"}), encoding="utf-8")
    return path


def write_song_folder(directory: str | Path, count: int = 4, seconds: float = 2.0) -> Path:
    """``count`` short songs (``seconds`` each, a little longer for every other one so a batch pads) into
    ``directory``; the last is an instrumental. Returns the folder ``data=`` takes."""
    folder = Path(directory)
    for i in range(count):
        lyrics = None if i == count - 1 and count > 1 else LYRICS[i % len(LYRICS)]
        write_song(folder, f"song_{i:02d}", seconds + 0.4 * (i % 2), seed=i, lyrics=lyrics)
    return folder
