"""Audio decoding and shaping: soundfile to decode (wav/flac/ogg/mp3), soxr to resample.

Every failure is an :class:`AudioError` whose message is the reason a person reads in the report.
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

AUDIO_EXTENSIONS = (".mp3", ".wav", ".flac", ".ogg", ".opus")  # .opus: Ogg Opus, which libsndfile decodes
#: audio that is not read (AAC, ALAC, WMA, AIFF, ...): reported as such, never passed over in silence
OTHER_AUDIO_EXTENSIONS = (".m4a", ".aac", ".mp4", ".wma", ".aiff", ".aif", ".ape", ".wv", ".webm", ".mka")


def unsupported(ext: str) -> str:
    """The reason for audio in a format that is not read (a sentence fragment)."""
    return (f"{ext or 'a file without extension'} is not an audio format audiotrain reads "
            f"({'/'.join(AUDIO_EXTENSIONS)}): convert it to one of them")


class AudioError(ValueError):
    """An audio file cannot be used; the message says why in a few words."""


@dataclass(frozen=True)
class AudioSpec:
    """How a plugin wants its audio: rate, channels, length bounds and the silence rule."""

    sample_rate: int = 48000
    channels: int = 2
    min_duration: float = 3.0
    max_duration: float = 240.0
    silence_threshold: float = 0.95  # fraction of exactly-zero samples (all channels) that counts as silent
    #: True: a clip outside [min_duration, max_duration] is skipped (reported), never cut or padded — for
    #: systems whose clip goes with a transcript of all of it (a cut clip would not match its text)
    strict_bounds: bool = False

    def cache_fields(self) -> dict:
        out = {"sr": self.sample_rate, "ch": self.channels, "min": self.min_duration, "max": self.max_duration}
        return {**out, "strict": True} if self.strict_bounds else out


@dataclass(frozen=True)
class StreamSpec(AudioSpec):
    """One audio stream of a row (a role such as ``mix`` or ``vocal``): its audio spec, and whether a row
    without it is unusable (``required``) or simply lacks that stream's features (optional).

    ``source``: another role whose file this stream decodes, at this stream's own spec (a voice prompt at 24 kHz
    cut from the vocal stem a codec reads at 16 kHz); the row names only that role's file. None: its own file."""

    required: bool = True
    source: str | None = None


def file_problem(path: str | Path, shown: str | None = None) -> str | None:
    """Why ``path`` is not a readable regular file — a sentence fragment starting with ``shown`` (default: the file's
    name), e.g. ``"x.wav is a folder, not an audio file"`` — or None when it is one."""
    p = Path(path)
    name = shown or p.name
    try:
        st = p.stat()
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            return f"{name} cannot be read (permission denied)"
        if exc.errno == errno.ELOOP:
            return f"{name} is a symbolic link loop (it leads back to itself)"
        if p.is_symlink():
            return f"{name} is a link that points to no file ({os.readlink(p)})"
        return f"{name} not found"
    if stat.S_ISDIR(st.st_mode):
        return f"{name} is a folder, not an audio file"
    if not stat.S_ISREG(st.st_mode):
        return f"{name} is not a regular file"
    return None


def decode(path: str | Path, max_seconds: float | None = None,
           notes: list[str] | None = None) -> tuple[np.ndarray, int]:
    """Decode a file to float32 (channels, samples) at its own sample rate: only its first ``max_seconds`` (an hour
    of audio is never read whole), and up to where a truncated file stops (said in ``notes``)."""
    frames, sr = decode_frames(path, max_seconds, notes)
    return np.ascontiguousarray(frames.T), sr


def decode_frames(path: str | Path, max_seconds: float | None = None,
                  notes: list[str] | None = None) -> tuple[np.ndarray, int]:
    """:func:`decode`, as the decoder hands the samples over: (samples, channels), interleaved. ``frames.T`` is the
    (channels, samples) view :func:`resample` reads without a copy."""
    import soundfile as sf

    p = Path(path)
    problem = file_problem(p)
    if problem is not None:
        raise AudioError(problem)
    if p.stat().st_size == 0:
        raise AudioError("the file is empty (0 bytes)")
    if p.suffix.lower() in OTHER_AUDIO_EXTENSIONS:
        raise AudioError(unsupported(p.suffix.lower()))
    corrupt = f"cannot decode audio: the {p.suffix or 'file'} file is corrupt, truncated or not audio"
    blocks: list[np.ndarray] = []
    with _quiet_stderr():  # libmpg123 prints resync chatter for corrupt mp3s straight to fd 2
        try:
            fh = sf.SoundFile(os.fsencode(p))  # bytes: a name that is not UTF-8 opens too
        except Exception:  # libsndfile reports corrupt/unsupported files in many (misleading) ways
            raise AudioError(corrupt) from None
        with fh:
            sr, announced = int(fh.samplerate), int(fh.frames)
            wanted = announced if max_seconds is None else min(announced, int(round(max_seconds * sr)) or 1)
            step, got, broke = max(sr, 1), 0, False  # 1 s blocks: a cut costs at most 1 s
            done = False
            try:  # one read for a sound file (as fast as soundfile gets); 1 s blocks only where the stream breaks
                whole = fh.read(wanted, dtype="float32", always_2d=True)
            except Exception:
                try:
                    fh.seek(0)
                except Exception:
                    done = broke = True
            else:
                if len(whole):
                    blocks.append(whole)
                    got = len(whole)
                done = True  # all the stream held (fewer frames than announced: it ends early)
            while not done and got < wanted:
                try:
                    block = fh.read(min(step, wanted - got), dtype="float32", always_2d=True)
                except Exception:  # a cut-off FLAC/OGG fails mid-stream: keep what decoded before the cut
                    broke = True
                    break
                if not len(block):
                    break
                blocks.append(block)
                got += len(block)
    if not blocks or got == 0:
        raise AudioError(corrupt if broke else "the file holds no audio samples")
    data = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
    if not np.isfinite(data).all():
        raise AudioError("the audio contains NaN or infinite samples")
    if notes is not None:
        if broke or got < 0.9 * wanted:
            notes.append(f"ends early (truncated?): {got / sr:.1f} s decoded of the {wanted / sr:.1f} s its header "
                         "announces; the decoded part is used")
        if max_seconds is not None and announced > wanted:
            notes.append(f"{announced / sr:.0f} s long: only its first {max_seconds:g} s are used (dataset.max_duration)")
    return data, sr


@contextlib.contextmanager
def _quiet_stderr():
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def resample(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample (channels, samples) with soxr's high-quality converter, to a C-contiguous array."""
    if sr_in == sr_out:
        return audio
    out, interleaved = _soxr(audio, sr_in, sr_out)
    return np.ascontiguousarray(out.T) if interleaved else out


def _soxr(audio: np.ndarray, sr_in: int, sr_out: int) -> tuple[np.ndarray, bool]:
    """soxr on (channels, samples) without a transposed copy of the input: a view of decoded frames
    (:func:`decode_frames`) is handed over as it lies in memory — the result is frames too (True) — and a
    channels-first array a row at a time (False: channels first). soxr filters each channel on its own, so the
    samples are the same bits either way."""
    import soxr

    if audio.T.flags.c_contiguous:
        return np.asarray(soxr.resample(audio.T, sr_in, sr_out, quality="HQ"), dtype=np.float32), True
    return np.stack([np.asarray(soxr.resample(np.ascontiguousarray(row), sr_in, sr_out, quality="HQ"),
                                dtype=np.float32) for row in audio]), False


#: which side each channel of a WAVE file's default layout goes to when mixed to stereo (C: both, -: dropped LFE)
_LAYOUTS = {3: "LRC", 4: "LRLR", 5: "LRCLR", 6: "LRC-LR", 7: "LRC-CLR", 8: "LRC-LRLR"}


def to_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """Mono → duplicated; more channels → their mean (mono) or a downmix (stereo: surround layouts 3-8 channels by
    their default WAVE order, the front pair at full and the others at -3 dB; any other count their mean on both)."""
    c = audio.shape[0]
    if c == channels:
        return audio
    if channels == 1:
        return _mean_of_rows(audio)
    if c == 1:
        return np.repeat(audio, channels, axis=0)
    if c > channels and channels == 2:
        return _downmix_stereo(audio)
    if c > channels:
        return audio[:channels]
    return np.concatenate([audio, np.repeat(audio[-1:], channels - c, axis=0)], axis=0)


def _downmix_stereo(audio: np.ndarray) -> np.ndarray:
    layout = _LAYOUTS.get(audio.shape[0])
    if layout is None:
        return np.repeat(audio.mean(axis=0, keepdims=True), 2, axis=0)
    out = np.zeros((2, audio.shape[1]), dtype=np.float32)
    weight = np.zeros(2)
    for i, side in enumerate(layout):
        gain = 1.0 if i < 2 else 0.7071
        for j, s in enumerate("LR"):
            if side in (s, "C"):
                out[j] += gain * audio[i]
                weight[j] += gain
    return out / weight[:, None].astype(np.float32)  # normalised: the mix never clips


def _mean_of_rows(audio: np.ndarray) -> np.ndarray:
    """``audio.mean(axis=0, keepdims=True)`` bit for bit (rows added in order, then divided), a row at a time: as
    fast on a (channels, samples) view of interleaved frames, where numpy's reduction over the short strided axis
    is several times slower."""
    out = audio[0].astype(np.float32, copy=True)
    for row in audio[1:]:
        out += row
    out /= audio.shape[0]
    return out[None, :]


def is_silent(audio: np.ndarray, threshold: float) -> bool:
    """True when more than ``threshold`` of the time steps are exactly zero on every channel.

    Counting the zero samples first settles almost every clip in one fast pass: a step that is zero on every
    channel holds one zero per channel, so with no more zeros than ``threshold`` of the samples the clip is not
    silent; only the rest is checked step by step (row by row: fast on a view of interleaved frames too)."""
    channels, steps = audio.shape
    if steps == 0:
        return False
    if np.count_nonzero(audio == 0.0) / (channels * steps) <= threshold:
        return False
    zero_steps = audio[0] == 0.0
    for row in audio[1:]:
        zero_steps &= row == 0.0
    return float(zero_steps.mean()) > threshold


def load_audio(path: str | Path, spec: AudioSpec, notes: list[str] | None = None) -> tuple[np.ndarray, int]:
    """Decode (at most ``spec.max_duration``), mix to ``spec.channels``, resample, clamp, check length and silence,
    pad to min. What a person should know about a kept file (cut at max, mixed down, truncated) goes to ``notes``.

    Returns (audio (channels, samples) float32 at ``spec.sample_rate``, original length in samples
    at the target rate before padding, capped at max).
    """
    strict = getattr(spec, "strict_bounds", False)
    limit = spec.max_duration + (0.05 if strict else 0.0)  # strict: read a little past the bound to see it crossed
    said: list[str] = []
    # (channels, samples) as a view of the decoded frames: resampled without a transposed copy, transposed once
    frames, sr = decode_frames(path, max_seconds=limit if spec.max_duration > 0 else None, notes=said)
    audio = frames.T
    if notes is not None:  # strict: a clip past the bound is skipped below, so "only its first ..." is not said
        notes.extend(t for t in said if not (strict and "only its first" in t))
    n = audio.shape[1]
    if n < sr / 100:
        raise AudioError(f"too short: {n} sample{'' if n == 1 else 's'} ({1000 * n / sr:.2f} ms at {sr} Hz); "
                         "a clip needs at least 10 ms of audio")
    if notes is not None and audio.shape[0] > max(spec.channels, 2):
        notes.append(f"{audio.shape[0]} channels mixed down to {spec.channels}")
    audio = to_channels(audio, spec.channels)
    if is_silent(audio, spec.silence_threshold):
        raise AudioError(f"silent ({spec.silence_threshold:.0%}+ of the samples are exactly zero)")
    if strict and spec.max_duration > 0 and n > spec.max_duration * sr:
        raise AudioError(f"longer than dataset.max_duration={spec.max_duration:g} s: it is skipped, not cut (its "
                         f"transcript covers all of it); split it (e.g. at its pauses) or raise the bound")
    if strict and n < spec.min_duration * sr:
        raise AudioError(f"{n / sr:.2f} s is shorter than dataset.min_duration={spec.min_duration:g} s: it is "
                         f"skipped, not padded")
    if sr != spec.sample_rate:
        out, interleaved = _soxr(audio, sr, spec.sample_rate)
        del audio, frames  # freed before the channels-first copy: a file's peak stays about twice its audio
        audio = np.ascontiguousarray(out.T) if interleaved else out
        del out
    np.clip(audio, -1.0, 1.0, out=audio)
    max_len = int(round(spec.max_duration * spec.sample_rate))
    audio = audio[:, :max_len]
    length = audio.shape[1]
    min_len = int(round(spec.min_duration * spec.sample_rate))
    if length < (1.0 - spec.silence_threshold) * min_len:
        raise AudioError(f"too short: {length / spec.sample_rate:.2f} s, padded to dataset.min_duration="
                         f"{spec.min_duration:g} s it would be more than {spec.silence_threshold:.0%} silence")
    if length < min_len:
        audio = np.pad(audio, ((0, 0), (0, min_len - length)))
    return np.ascontiguousarray(audio, dtype=np.float32), length


def content_hash(path: str | Path) -> str:
    """sha256 of the file's bytes (the audio part of a feature-cache key)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:24]
