"""Synthetic songs in ACE-Step's raw folder format (``X.mp3`` + ``X_prompt.txt`` + ``X_lyrics.txt``), for the
demo (``experiments/make_demo_data.py``) and the tests: melody, bass and drums from the core's test signals
(``audiotrain.data.synth``), tagged truthfully.

Each song's tags describe what was synthesised (tempo, key, mode, lead timbre, energy), and its lyrics follow
the seed format's [verse]/[chorus] structure, so a demo folder looks like real data.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audiotrain.data.synth import kick, noise_burst, normalise, tone

NOTE_NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
MAJOR = [0, 2, 4, 5, 7, 9, 11]
MINOR = [0, 2, 3, 5, 7, 8, 10]
TIMBRE = {"synthesizer": "square", "piano": "harmonic", "guitar": "plucked"}  # lead instrument → signal
LYRICS_EN = [
    "[verse]\nlights are low in the city tonight\nwe keep on moving till the morning light\n\n"
    "[chorus]\nhold on, hold on\nwe are the song",
    "[verse]\nwalking slow by the river side\nthe water knows what i try to hide\n\n"
    "[chorus]\nfly away, fly away\nthere is another day",
    "[verse]\n2 hearts and 1 road\ncarry on, carry the load\n\n[chorus]\nrun, run, run\ninto the sun",
]
LYRICS_ZH = "[verse]\n你好世界\n我们一起唱歌\n\n[chorus]\n明天会更好"


@dataclass
class SongSpec:
    name: str
    bpm: int
    root: int          # 0 = C
    minor: bool
    lead: str          # "synthesizer" | "piano" | "guitar"
    seconds: float
    sample_rate: int = 44100
    lyrics: str = ""
    energetic: bool = True

    @property
    def tags(self) -> list[str]:
        genre = {"synthesizer": "electronic", "piano": "pop", "guitar": "folk"}[self.lead]
        return [genre, self.lead, f"{self.bpm} bpm", f"{NOTE_NAMES[self.root]} {'minor' if self.minor else 'major'}",
                "minor key" if self.minor else "major key", "energetic" if self.energetic else "calm", "drums"]


def render(spec: SongSpec, seed: int = 0) -> np.ndarray:
    """Stereo (2, N) float32 in [-1, 1]: a lead melody on the scale, a bass note, a kick on every beat and a
    hi-hat between."""
    rng = np.random.default_rng(seed)
    sr, n = spec.sample_rate, int(spec.seconds * spec.sample_rate)
    beat = int(sr * 60 / spec.bpm)
    scale = MINOR if spec.minor else MAJOR
    left, right = np.zeros(n, np.float32), np.zeros(n, np.float32)
    base = 220.0 * 2 ** ((spec.root - 9) / 12)
    pos, step = 0, 0
    while pos < n:
        deg = [0, 2, 4, 5, 4, 2, 1, 0][step % 8] if spec.energetic else [0, 4, 2, 0][step % 4]
        freq = base * 2 ** (scale[deg % 7] / 12) * (2 if deg >= 7 else 1)
        dur = min(beat // (2 if spec.energetic else 1), n - pos)
        note = tone(freq, dur, sr, TIMBRE[spec.lead], rng) * 0.35
        left[pos:pos + dur] += note * 0.8
        right[pos:pos + dur] += note * 0.6
        bass = tone(base / 2, dur, sr, "harmonic", rng) * 0.25
        left[pos:pos + dur] += bass
        right[pos:pos + dur] += bass
        pos += dur
        step += 1
    for b in range(0, n, beat):
        k = kick(min(int(0.12 * sr), n - b), sr)
        left[b:b + len(k)] += k
        right[b:b + len(k)] += k
        h = b + beat // 2
        if h < n:
            hat = noise_burst(min(int(0.03 * sr), n - h), sr, rng)
            left[h:h + len(hat)] += hat
            right[h:h + len(hat)] += hat * 1.2
    return normalise(np.stack([left, right]))


def demo_specs(count: int = 6, seconds: float = 6.0) -> list[SongSpec]:
    """``count`` songs that differ in tempo, key, mode, lead and energy (one in Chinese, one instrumental)."""
    leads = ["synthesizer", "piano", "guitar"]
    out = []
    for i in range(count):
        lyrics = LYRICS_ZH if i == 2 else ("" if i == 3 else LYRICS_EN[i % len(LYRICS_EN)])
        out.append(SongSpec(name=f"demo_song_{i + 1:02d}", bpm=[96, 120, 128, 84, 140, 110][i % 6],
                            root=[9, 0, 7, 2, 4, 5][(i + i // 6) % 6], minor=i % 2 == 0, lead=leads[i % 3],
                            seconds=seconds + (i % 3), lyrics=lyrics, energetic=i % 3 != 1))
    return out


def write_song_folder(directory: str | Path, specs: list[SongSpec], fmt: str = "mp3") -> list[Path]:
    """Write X.<fmt>, X_prompt.txt and (if any lyrics) X_lyrics.txt per song; returns audio paths."""
    import soundfile as sf

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, spec in enumerate(specs):
        audio = render(spec, seed=i)
        p = d / f"{spec.name}.{fmt}"
        sf.write(str(p), audio.T, spec.sample_rate)
        (d / f"{spec.name}_prompt.txt").write_text(", ".join(spec.tags) + "\n", encoding="utf-8")
        if spec.lyrics:
            (d / f"{spec.name}_lyrics.txt").write_text(spec.lyrics + "\n", encoding="utf-8")
        paths.append(p)
    return paths


def add_broken_inputs(directory: str | Path) -> dict[str, str]:
    """A corrupt mp3, a silent wav, an orphan prompt and an unreadable prompt; returns {file: why}."""
    import soundfile as sf

    d = Path(directory)
    (d / "broken_track.mp3").write_bytes(b"ID3\x03\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * 8)
    (d / "broken_track_prompt.txt").write_text("rock, guitar", encoding="utf-8")
    sf.write(str(d / "silent_track.wav"), np.zeros((48000 * 4, 2), np.float32), 48000)
    (d / "silent_track_prompt.txt").write_text("ambient", encoding="utf-8")
    (d / "orphan_prompt.txt").write_text("jazz, saxophone", encoding="utf-8")
    sf.write(str(d / "latin1_song.wav"), (0.3 * np.sin(np.arange(48000 * 3) / 10.0)).astype(np.float32), 48000)
    (d / "latin1_song_prompt.txt").write_bytes("caf\xe9, acoustic".encode("latin-1"))
    return {"broken_track.mp3": "cannot decode", "silent_track.wav": "silent", "orphan_prompt.txt": "no audio",
            "latin1_song_prompt.txt": "UTF-8"}
