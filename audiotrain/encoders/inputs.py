"""What a frozen encoder of one audio stream reads of its example: the real (unpadded) mono wave."""
from __future__ import annotations

from typing import Any, Mapping

import torch


def real_mono(example: Mapping[str, Any], what: str) -> torch.Tensor:
    """``example["audio"]`` ((1, N) or (N,)) as a float32 (N,) wave cut to ``audio_length`` — the core pads short
    clips to the stream's minimum duration, and an encoder encodes the real audio only. ``what`` names the
    encoder in the error for audio that is not mono."""
    audio = torch.as_tensor(example["audio"], dtype=torch.float32)
    if audio.dim() == 2:
        if audio.shape[0] != 1:
            raise ValueError(f"{what} wants mono audio (1, N), got {tuple(audio.shape)}")
        audio = audio[0]
    length = example.get("audio_length")
    return audio[: max(1, int(length))] if length is not None else audio
