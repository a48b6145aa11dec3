"""Trim Silence: where the sound of a slice starts, found by a simple energy-based voice-activity detector.

AIVC trims with torchaudio's ``functional.vad`` (a port of sox's ``vad`` effect: trigger level, search and pre-trigger
times over a noise-reduced spectrum), which only ever removes leading silence. This is a simpler detector with the
same contract: frames of 20 ms every 10 ms; a frame is sound when its RMS is within 30 dB of the slice's loudest
frame and above -50 dBFS; the sound starts at the first run of 30 ms of such frames, 50 ms of lead-in kept so that
soft onsets are not clipped. Nothing after that point is touched."""
from __future__ import annotations

import numpy as np

FRAME_SECONDS = 0.020
HOP_SECONDS = 0.010
RELATIVE_DB = -30.0   # below the loudest frame: silence
FLOOR_DB = -50.0      # dBFS: silence whatever the loudest frame is
RUN_SECONDS = 0.030   # sound must last this long to start the clip (a click does not)
LEAD_IN_SECONDS = 0.050


def frame_rms(audio: np.ndarray, frame: int, hop: int) -> np.ndarray:
    """RMS of each ``frame``-sample window every ``hop`` samples (the last one shorter if the audio is)."""
    if audio.size <= frame:
        return np.array([float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))]) if audio.size else np.zeros(0)
    starts = np.arange(0, audio.size - frame + 1, hop)
    squares = np.concatenate([[0.0], np.cumsum(np.square(audio, dtype=np.float64))])
    return np.sqrt((squares[starts + frame] - squares[starts]) / frame)


def trim_leading_silence(audio: np.ndarray, sample_rate: int) -> int:
    """How many samples of leading silence ``audio`` (mono) starts with; ``audio.size`` when it is all silence."""
    frame = max(int(FRAME_SECONDS * sample_rate), 1)
    hop = max(int(HOP_SECONDS * sample_rate), 1)
    rms = frame_rms(audio, frame, hop)
    if not rms.size:
        return 0
    threshold = max(float(rms.max()) * 10 ** (RELATIVE_DB / 20), 10 ** (FLOOR_DB / 20))
    loud = rms >= threshold
    run = max(int(round(RUN_SECONDS / HOP_SECONDS)), 1)
    if loud.size < run:
        return 0 if loud.any() else audio.size
    # the first frame that starts `run` loud frames in a row
    windows = np.convolve(loud.astype(np.int32), np.ones(run, dtype=np.int32), mode="valid")
    first = np.flatnonzero(windows == run)
    if not first.size:
        return audio.size
    return max(int(first[0]) * hop - int(LEAD_IN_SECONDS * sample_rate), 0)
