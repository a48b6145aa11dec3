"""Conditioning clips: N short clips per example, cut from the same file or other files of its group.

A plugin declares what it wants (``Plugin.conditioning_clips(cfg) -> [ClipSpec]``): how many clips, how
long (seconds, fixed or a range), where they come from (``same_file``, ``same_group`` — other items of the
example's group, e.g. the same speaker — or ``either``), and what they are cut from: cached/encoded features
(each with its frame rate and time axis) or a stream's raw audio. The core chooses them reproducibly from a
seed (the training module derives it from ``seed``, the global step and the batch position, so a resumed
run cuts the same clips) and crops — or zero-pads, when the plugin asks — each to its length. Clips cut from
features read the cache like the example itself; clips cut from a stream's raw audio decode that file at
the step (cached or not).

Each example's features then hold ``features[spec.name]``: a list of ``spec.count`` dicts, one per clip,
``{feature: tensor, "<feature>_length": LongTensor()}`` (the real frames before padding); a raw-audio clip
holds ``{"audio": (C, samples), "audio_length": LongTensor()}``.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

SOURCES = ("same_file", "same_group", "either")
STARTS = ("beginning", "random")


@dataclass(frozen=True)
class ClipSpec:
    #: the key the clips are stored under in each example's features
    name: str
    count: int = 1
    #: (shortest, longest) seconds; a fixed length when both are equal. Drawn uniformly per clip.
    seconds: tuple[float, float] = (2.0, 2.0)
    #: "same_file", "same_group" (falls back to the same file when the group has no other item), or "either"
    source: str = "same_group"
    #: features the clip is cut from: ``{feature name: (frames per second, time axis)}``
    features: Mapping[str, tuple[float, int]] = field(default_factory=dict)
    #: or the raw audio of this stream role (cut along the samples axis at the stream's rate)
    stream: str | None = None
    #: where a clip starts: at the beginning of its source, or at a random point
    start: str = "beginning"
    #: zero-pad a clip whose source is shorter than the drawn length (else it keeps the shorter length)
    pad: bool = False

    def __post_init__(self) -> None:
        lo, hi = (float(x) for x in self.seconds)
        if self.count < 1 or not 0 < lo <= hi:
            raise ValueError(f"clip '{self.name}': count={self.count} must be >= 1 and seconds={self.seconds} "
                             "must be 0 < shortest <= longest")
        if self.source not in SOURCES or self.start not in STARTS:
            raise ValueError(f"clip '{self.name}': source must be one of {SOURCES} and start one of {STARTS}")
        if bool(self.features) == (self.stream is not None):
            raise ValueError(f"clip '{self.name}': cut from features or from a stream's audio (exactly one)")


def clip_seed(base_seed: int, salt: int, position: int, spec_index: int = 0) -> int:
    """The seed of one example's clips: the run's seed, the step's salt and the position in the batch."""
    return (base_seed * 1_000_003 + salt * 131 + position + spec_index * 1_000_033) % (2**31)


def choose_sources(spec: ClipSpec, index: int, others: list[int], seed: int) -> list[int]:
    """The item each of ``spec.count`` clips is cut from (``others``: the rest of the example's group)."""
    if spec.source == "same_file":
        pool = [index]
    elif spec.source == "same_group":
        pool = others or [index]
    else:
        pool = [index, *others]
    gen = torch.Generator().manual_seed(seed)
    return [pool[int(torch.randint(len(pool), (1,), generator=gen).item())] for _ in range(spec.count)]


def cut(spec: ClipSpec, sources: list[Mapping[str, Any]], seed: int,
        rates: Mapping[str, tuple[float, int]] | None = None) -> list[dict[str, torch.Tensor]]:
    """One clip from each source (its features, or its ``{"audio", "audio_length"}`` stream); ``rates`` is
    ``{key: (per second, axis)}`` of what is cut (default: ``spec.features``)."""
    rates = dict(rates or spec.features)
    rng = random.Random(seed)
    lo, hi = (float(x) for x in spec.seconds)
    clips = []
    for source in sources:
        seconds = rng.uniform(lo, hi)
        first_key = next(iter(rates))
        rate0, axis0 = rates[first_key]
        available = _real_length(source, first_key, axis0) / rate0
        offset = rng.uniform(0.0, max(0.0, available - seconds)) if spec.start == "random" else 0.0
        clip: dict[str, torch.Tensor] = {}
        for key, (rate, axis) in rates.items():
            frames = max(1, int(seconds * rate + 1e-9))  # 44000 / 22050 s at 22050 Hz is 44000 samples, not 43999
            start = int(offset * rate)
            t = source[key]
            real = max(0, min(frames, _real_length(source, key, axis) - start))
            piece = t.narrow(axis, start, real) if real else t.narrow(axis, 0, 0)
            if spec.pad and real < frames:
                shape = list(piece.shape)
                shape[axis] = frames - real
                piece = torch.cat([piece, piece.new_zeros(shape)], dim=axis)
            clip[key] = piece
            clip[f"{key}_length"] = torch.tensor(real, dtype=torch.long)
        clips.append(clip)
    return clips


def _real_length(source: Mapping[str, Any], key: str, axis: int) -> int:
    n = int(source[key].shape[axis])
    given = source.get(f"{key}_length")
    return min(n, int(given)) if given is not None else n


def attach(specs: list[ClipSpec], items: list[dict[str, Any]], indices: list[int], base_seed: int, salt: int,
           group_of: Callable[[int], list[int]] | None, features_of: Callable[[int], Mapping[str, Any]],
           audio_of: Callable[[int, str], Mapping[str, Any] | None] | None = None,
           stream_rate: Callable[[str], float] | None = None) -> None:
    """Add every declared clip set to each example's features (in place).

    ``items[pos]`` are the features of the example at dataset index ``indices[pos]``; ``group_of(i)`` the
    other items of its group (None: no dataset, every clip comes from the example itself); ``features_of(j)``
    another item's features; ``audio_of(j, role)`` an item's decoded stream, for raw-audio clips."""
    for pos, (feats, index) in enumerate(zip(items, indices)):
        own = dict(feats)
        for k, spec in enumerate(specs):
            seed = clip_seed(base_seed, salt, pos, k)
            others = group_of(index) if (group_of is not None and spec.source != "same_file") else []
            chosen = choose_sources(spec, index, others, seed) if group_of is not None else [index] * spec.count
            if spec.stream is None:
                sources = [own if j == index else features_of(j) for j in chosen]
                feats[spec.name] = cut(spec, sources, seed)
            else:
                if audio_of is None or stream_rate is None:
                    raise ValueError(f"clip '{spec.name}' is cut from the '{spec.stream}' audio: it needs the dataset")
                sources = []
                for j in chosen:
                    decoded = audio_of(j, spec.stream)
                    if decoded is None:
                        raise ValueError(f"clip '{spec.name}': item {j} has no '{spec.stream}' stream")
                    sources.append(decoded)
                feats[spec.name] = cut(spec, sources, seed, {"audio": (stream_rate(spec.stream), -1)})
