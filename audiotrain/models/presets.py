"""What every plugin does with its named model sizes: check the name, copy a preset, build a random one.

A random (``tiny``) preset is built under a forked, seeded RNG, so its weights are the same in every run and
the caller's random state is left as it was.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Mapping, TypeVar

import torch

from audiotrain.errors import UserError

T = TypeVar("T")
TINY_SEED = 0


def preset_problems(name: Any, presets: Mapping[str, Any]) -> list[str]:
    """``[]``, or the one sentence for an unknown ``model.preset`` (a start for ``Plugin.validate``'s list)."""
    if str(name) in presets:
        return []
    return [f"model.preset={name} is unknown: use one of {', '.join(presets)}."]


def require_preset(name: Any, presets: Mapping[str, Any]) -> str:
    """``name`` as a string, or a :class:`UserError` with :func:`preset_problems`' sentence."""
    problems = preset_problems(name, presets)
    if problems:
        raise UserError(problems[0])
    return str(name)


def preset_copy(name: str, presets: Mapping[str, Mapping[str, Any]], system: str) -> dict[str, Any]:
    """A deep copy of preset ``name``; an unknown name is a ``KeyError`` listing the known ones."""
    if name not in presets:
        raise KeyError(f"unknown {system} preset {name!r}; known: {sorted(presets)}")
    return copy.deepcopy(dict(presets[name]))


def seeded(build: Callable[[], T], seed: int = TINY_SEED) -> T:
    """``build()`` with torch's CPU RNG seeded to ``seed`` inside a fork (the caller's RNG is untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()
