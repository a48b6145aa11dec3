"""A small ai-voice-cloning training folder spoken by espeak-ng: ``audio/clipN.wav`` (22,050 Hz mono PCM16, as AIVC
writes them), ``train.txt`` and ``validation.txt`` (``audio/clipN.wav|text``). Needs the ``espeak-ng`` program."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from audiotrain.errors import UserError

LINES = ["The quick brown fox jumps over the lazy dog.", "She sells sea shells by the sea shore.",
         "A stitch in time saves nine.", "Hello there, how are you today?",
         "It is a beautiful morning in the city.", "Please call me back tomorrow.",
         "The rain in the valley fell all night.", "We walked home along the old river road."]
SAMPLE_RATE = 22050


def speak(text: str, path: Path, voice: str = "en-us") -> Path:
    """``text`` spoken by espeak-ng into ``path`` at 22,050 Hz mono PCM16."""
    if shutil.which("espeak-ng") is None:
        raise UserError("TorToiSe's example data is spoken by espeak-ng, which is not installed: "
                        "apt-get install espeak-ng.")
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = path.with_suffix(".espeak.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), text], check=True, capture_output=True)
    audio, sr = sf.read(str(raw), dtype="float32", always_2d=True)
    raw.unlink()
    mono = audio[:, 0]
    if sr != SAMPLE_RATE:
        import soxr

        mono = soxr.resample(mono, sr, SAMPLE_RATE).astype(np.float32)
    sf.write(str(path), mono, SAMPLE_RATE, subtype="PCM_16")
    return path


def write_training_folder(directory: str | Path, count: int = 4, validation: int = 1) -> Path:
    """``count`` clips in train.txt and ``validation`` more in validation.txt; returns ``directory``."""
    root = Path(directory)
    lines: dict[str, list[str]] = {"train.txt": [], "validation.txt": []}
    for i in range(count + validation):
        text = LINES[i % len(LINES)]
        speak(text, root / "audio" / f"clip{i}.wav")
        lines["train.txt" if i < count else "validation.txt"].append(f"audio/clip{i}.wav| {text}")
    for name, rows in lines.items():
        (root / name).write_text("\n".join(rows), encoding="utf-8")  # AIVC: no trailing newline
    return root
