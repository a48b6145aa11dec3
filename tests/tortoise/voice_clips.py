"""Synthetic voice clips for the prepare tests: espeak-ng speech, tiled or cut to an exact number of samples, written
as wav/flac (soundfile) or mp3 (ffmpeg) at the rate and channel count a test asks for; the standard voice folder
(clips with known transcripts and lengths) and the lists AIVC's rules make of it."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

needs_tools = pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("ffmpeg") is None,
                                 reason="needs espeak-ng and ffmpeg (apt) to make test speech")


@lru_cache(maxsize=None)
def _espeak(text: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, capture_output=True)
        audio, sr = sf.read(wav, dtype="float32")
    return audio, sr


def speech(text: str, seconds: float, sr: int = 22050) -> np.ndarray:
    """``text`` spoken (repeated as often as needed) for exactly ``round(seconds * sr)`` samples, with a faint
    dither so no stretch is exactly zero."""
    from audiotrain.data.audio_io import resample

    audio, rate = _espeak(text)
    audio = resample(audio[None, :], rate, sr)[0]
    n = int(round(seconds * sr))
    out = np.resize(audio, n) if audio.size else np.zeros(n, np.float32)
    dither = np.random.RandomState(n).uniform(-1e-3, 1e-3, n).astype(np.float32)
    return np.clip(out + dither, -1, 1).astype(np.float32)


def write(path: Path, channels: np.ndarray | list[np.ndarray], sr: int) -> Path:
    """Write one channel (an array) or several (a list) to ``path``: mp3 through ffmpeg, the rest with soundfile."""
    import soundfile as sf

    data = np.stack(channels, axis=1) if isinstance(channels, list) else channels
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".mp3":
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "x.wav"
            sf.write(wav, data, sr, subtype="PCM_16")
            subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), str(path)], check=True)
    else:
        sf.write(path, data, sr, subtype="PCM_16")
    return path


SR = 22050
LONG_TEXT = "word " * 44 + "words"  # 225 characters
#: name: (transcript, seconds, rate) of the standard voice folder (alpha..golf; corrupt.wav besides)
CLIPS = {
    "alpha.wav": ("The quick brown fox jumps over the lazy dog.", 3.0, 22050),
    "bravo.flac": ("Hi there.", 2.0, 44100),                          # 9 characters: validation
    "charlie.wav": ("A short but long enough line.", 0.8, 44100),     # 0.8 s < 1 s: validation
    "delta.mp3": ("Stereo speech on the left channel only.", 2.5, 44100),
    "echo.wav": ("This one is far too long for TorToiSe.", 12.5, 22050),
    "foxtrot.wav": ("Too short.", 0.4, 22050),
    "golf.wav": (LONG_TEXT, 3.0, 22050),
}
TRAIN = ["audio/alpha.wav|The quick brown fox jumps over the lazy dog.",
         "audio/delta.wav|Stereo speech on the left channel only."]
VALIDATION = ["audio/bravo.wav|Hi there.", "audio/charlie.wav|A short but long enough line."]


def make_voice(folder: Path, names=tuple(CLIPS), transcripts: bool = True, corrupt: bool = True) -> Path:
    for name in names:
        text, seconds, rate = CLIPS[name]
        audio = speech(text, seconds, rate)
        if name.endswith(".mp3"):  # stereo: the speech on the left, silence on the right
            write(folder / name, [audio, np.zeros_like(audio)], rate)
        else:
            write(folder / name, audio, rate)
        if transcripts:
            (folder / name).with_suffix(".txt").write_text(text + "\n", encoding="utf-8")
    if corrupt:
        (folder / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really audio at all")
    return folder


def lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    assert not text.endswith("\n")
    return text.split("\n") if text else []
