"""Finiteness checks of weights about to be written: no checkpoint or adapter file ever holds NaN or Inf.

Every saver (the adapter writer, the checkpoint writer) calls :func:`check_finite` on what it writes first; a
weight with a NaN/Inf value is refused with one sentence naming it, and nothing is written.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch

from audiotrain.errors import UserError


class NonFiniteWeights(UserError):
    """Weights with NaN/Inf values were about to be written."""


def _tensors(state: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, torch.Tensor]]:
    for name, value in state.items():
        key = f"{prefix}{name}"
        if isinstance(value, torch.Tensor):
            yield key, value
        elif isinstance(value, Mapping):
            yield from _tensors(value, f"{key}.")


def nonfinite_names(state: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors of ``state`` (nested mappings too) holding a NaN or Inf value."""
    named = [(n, t) for n, t in _tensors(state) if t.is_floating_point() or t.is_complex()]
    if not named:
        return []
    flags = [torch.isfinite(t.detach()).all() for _, t in named]  # one bool per tensor, read back in one go
    ok = torch.stack([f.to("cpu") for f in flags]).tolist()
    return [n for (n, _), good in zip(named, ok) if not good]


def check_finite(state: Mapping[str, Any], what: str) -> None:
    """Raise :class:`NonFiniteWeights` when any tensor of ``state`` holds NaN/Inf; ``what`` names the file."""
    bad = nonfinite_names(state)
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise NonFiniteWeights(
            f"Not writing {what}: {len(bad)} weight tensor(s) hold NaN/Inf values ({shown}), so the training "
            f"diverged; keep the last saved checkpoint or adapter and lower optimizer.lr or change precision.")
