"""A clip a user gives ``audiotrain generate`` (a reference voice, an acoustic prompt): decoded as data, mono at
the model's rate, its first seconds — or one sentence naming the option and the fix."""
from __future__ import annotations

import numpy as np

from audiotrain.errors import UserError


def load_reference(path: str, option: str, sample_rate: int, seconds: float, of: str) -> np.ndarray:
    """``(1, N)`` float32: the first ``seconds`` of ``path`` at ``sample_rate``, mono. ``of`` says what the clip
    should hold in the error ("someone speaking")."""
    from audiotrain.data.audio_io import AudioError, AudioSpec, load_audio

    spec = AudioSpec(sample_rate=int(sample_rate), channels=1, min_duration=0.0, max_duration=float(seconds))
    try:
        audio, length = load_audio(path, spec)
    except (AudioError, OSError, RuntimeError) as exc:
        raise UserError(f"{option} {path} is not a usable voice clip ({str(exc).splitlines()[0][:120]}): give a "
                        f"wav, flac or mp3 of {of}, a few seconds long.") from None
    return audio[:, :length]
