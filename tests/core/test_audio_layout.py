"""The decode path works on a (channels, samples) view of the decoded frames (no transposed copies): the same bits
as the channels-first reference (soundfile → channels-first copy → soxr on interleaved frames → numpy's mean and
silence rule), C-contiguous float32 out, for every channel count and rate the plugins ask for."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import soxr

from audiotrain.data.audio_io import AudioSpec, decode, is_silent, load_audio, resample, to_channels


def reference(path, spec: AudioSpec) -> np.ndarray:
    """load_audio written the plain way, for sound files shorter than the cap."""
    frames, sr = sf.read(path, dtype="float32", always_2d=True)
    audio = np.ascontiguousarray(frames.T)
    audio = audio.mean(axis=0, keepdims=True) if spec.channels == 1 and audio.shape[0] > 1 else \
        to_channels(audio, spec.channels)
    if sr != spec.sample_rate:
        audio = np.ascontiguousarray(soxr.resample(np.ascontiguousarray(audio.T), sr, spec.sample_rate,
                                                   quality="HQ").T)
    return np.clip(audio, -1.0, 1.0)


@pytest.mark.parametrize("channels,rate,ext", [(2, 44100, "wav"), (1, 22050, "flac"), (6, 48000, "wav"),
                                               (3, 24000, "flac"), (2, 48000, "ogg")])
def test_load_audio_gives_the_reference_bits(tmp_path, channels, rate, ext):
    rng = np.random.default_rng(channels)
    x = np.clip(0.4 * rng.standard_normal((rate * 2, channels)), -1, 1).astype(np.float32)
    path = tmp_path / f"a.{ext}"
    sf.write(path, x, rate)
    for out_rate in (48000, 44100, 24000, 16000):
        for out_channels in (1, 2):
            spec = AudioSpec(sample_rate=out_rate, channels=out_channels, min_duration=1.0, max_duration=30.0)
            got, length = load_audio(path, spec)
            want = reference(path, spec)
            assert got.dtype == np.float32 and got.flags.c_contiguous and length == want.shape[1]
            assert got.shape == (out_channels, round(2 * out_rate)) == want.shape
            assert got.tobytes() == want.tobytes(), (channels, rate, out_rate, out_channels)
    audio, sr = decode(path)
    assert sr == rate and audio.flags.c_contiguous and audio.shape == (channels, 2 * rate)


def test_resample_row_by_row_and_interleaved_are_the_same_bits():
    rng = np.random.default_rng(1)
    frames = rng.standard_normal((30000, 2)).astype(np.float32)
    interleaved = resample(frames.T, 44100, 48000)  # a view of frames: soxr reads them as they lie
    rows = resample(np.ascontiguousarray(frames.T), 44100, 48000)  # channels first: a row at a time
    assert interleaved.flags.c_contiguous and rows.flags.c_contiguous and interleaved.shape == (2, 32653)
    assert interleaved.tobytes() == rows.tobytes()


def test_the_silence_rule_counts_steps_zero_on_every_channel():
    rule = lambda a, t: float(np.all(a == 0.0, axis=0).mean()) > t  # noqa: E731 - the rule as written plainly
    a = np.zeros((2, 1000), np.float32)
    a[0, :30] = 0.5  # 970 steps zero on both channels: 97% > 95%
    assert is_silent(a, 0.95) and rule(a, 0.95)
    a[1, 30:60] = -0.5  # 940: not silent, though 97% of the samples of channel 0 are zero
    assert not is_silent(a, 0.95) and not rule(a, 0.95)
    b = np.zeros((2, 1000), np.float32)
    b[:, :50] = 0.1  # exactly 95%: not more than the threshold
    assert not is_silent(b, 0.95) and not is_silent(b.T.copy().T, 0.95)
    c = np.full((3, 500), -0.0, np.float32)  # negative zero is zero
    assert is_silent(c, 0.95) and is_silent(np.zeros((1, 0), np.float32), 0.5) is False
    for seed in range(20):  # random sparse clips, channels-first and as views of frames
        rng = np.random.default_rng(seed)
        d = np.where(rng.random((2, 400)) < rng.random(), rng.standard_normal((2, 400)), 0).astype(np.float32)
        for t in (0.5, 0.9, 0.95):
            assert is_silent(d, t) == rule(d, t) == is_silent(np.ascontiguousarray(d.T).T, t)
