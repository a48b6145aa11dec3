"""A small voice folder in VALL-E's format, spoken by espeak-ng: ``<speaker>/clipN.wav`` + ``clipN.txt``.

Two speakers (espeak-ng's en-us and en-gb voices), so every clip has a same-speaker acoustic prompt and a
speaker-disjoint validation split is possible. Needs the ``espeak-ng`` program (VALL-E's phonemizer needs it too).
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from audiotrain.errors import UserError

LINES = ["The quick brown fox jumps over the lazy dog.", "She sells sea shells by the sea shore.",
         "A stitch in time saves nine.", "Hello there, how are you today?",
         "It is a beautiful morning in the city.", "Please call me back tomorrow.",
         "The rain in the valley fell all night.", "We walked home along the old river road."]
VOICES = {"alice": "en-us", "bob": "en-gb"}


def write_voice_folder(directory: str | Path, count: int = 6) -> Path:
    """``count`` clips (at least 2 per speaker), alternating between the two speakers; returns ``directory``."""
    if shutil.which("espeak-ng") is None:
        raise UserError("VALL-E's example data is spoken by espeak-ng, which is not installed: "
                        "apt-get install espeak-ng (VALL-E's phonemizer needs it too).")
    root = Path(directory)
    speakers = list(VOICES)
    for i in range(max(count, 2 * len(speakers))):
        spk = speakers[i % len(speakers)]
        text = LINES[i % len(LINES)]
        folder = root / spk
        folder.mkdir(parents=True, exist_ok=True)
        wav = folder / f"clip{i // len(speakers)}.wav"
        subprocess.run(["espeak-ng", "-v", VOICES[spk], "-w", str(wav), text], check=True, capture_output=True)
        wav.with_suffix(".txt").write_text(text, encoding="utf-8")
    return root
