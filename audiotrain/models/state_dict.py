"""Loading a state dict strictly, with one sentence a user can act on when it does not fit.

``torch``'s own strict load raises a wall of key names; :func:`check_state_dict` says instead how many keys
are missing, unexpected and mis-shaped, names the first few of each, and what to do. The expected side is a
module (its ``state_dict()``) or any mapping of names to tensors, so the same sentence serves a whole model's
checkpoint and a part of one (an adapter's weights, the base weights a LoRA run keeps).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Union

import torch

from audiotrain.errors import UserError

SHOWN = 3  # keys named per kind

Expected = Union[torch.nn.Module, Mapping[str, torch.Tensor]]


class StateDictMismatch(UserError):
    """The weights do not fit the model they are loaded into."""


def _examples(names: list[str]) -> str:
    return ", ".join(names[:SHOWN]) + (", ..." if len(names) > SHOWN else "")


@dataclass(frozen=True)
class Mismatch:
    """How ``state`` differs from what was expected, each list sorted: ``missing`` keys the model has and the
    file lacks, ``unexpected`` the reverse, ``shapes`` as ``"<key> [file shape] vs [model shape]"``."""

    missing: list[str]
    unexpected: list[str]
    shapes: list[str]

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shapes)

    def sentence(self, source: str, target: str, fix: str) -> str:
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing keys (e.g. {_examples(self.missing)})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected keys (e.g. {_examples(self.unexpected)})")
        if self.shapes:
            parts.append(f"{len(self.shapes)} shape mismatches (file vs model, e.g. {_examples(self.shapes)})")
        return f"{source} does not match {target}: {'; '.join(parts)}; {fix}."


def compare(expected: Expected, state: Mapping[str, torch.Tensor]) -> Mismatch:
    """The keys and shapes of ``state`` against ``expected`` (a module's state dict, or a mapping of tensors)."""
    own = expected.state_dict() if isinstance(expected, torch.nn.Module) else expected
    shapes = sorted(f"{k} {list(state[k].shape)} vs {list(own[k].shape)}" for k in set(own) & set(state)
                    if tuple(state[k].shape) != tuple(own[k].shape))
    return Mismatch(sorted(set(own) - set(state)), sorted(set(state) - set(own)), shapes)


def mismatch_message(expected: Expected, state: Mapping[str, torch.Tensor], source: str, target: str,
                     fix: str) -> str | None:
    """None when keys and shapes match exactly, else the sentence :func:`check_state_dict` raises."""
    found = compare(expected, state)
    return found.sentence(source, target, fix) if found else None


def check_state_dict(expected: Expected, state: Mapping[str, torch.Tensor], source: str, target: str,
                     fix: str) -> None:
    """Raise :class:`StateDictMismatch` (one sentence) unless ``state`` has exactly ``expected``'s keys and shapes.

    ``source`` names the file, ``target`` the model ("the model built from its config"), ``fix`` what to do
    ("give the weights of that preset"). Works on a model built on the meta device.
    """
    message = mismatch_message(expected, state, source, target, fix)
    if message:
        raise StateDictMismatch(message)


def load_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str, target: str, fix: str,
                assign: bool = False) -> torch.nn.Module:
    """:func:`check_state_dict`, then ``load_state_dict(strict=True)`` (``assign`` for meta-built models)."""
    check_state_dict(model, state, source, target, fix)
    model.load_state_dict(state, strict=True, assign=assign)
    return model


def savable(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` ready for ``safetensors.save_file``: contiguous CPU tensors, and every tensor that shares memory
    with an earlier one (tied weights: a text encoder's input embedding and its ``shared`` table) copied, so each key
    is written whole and loads back strictly."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, value in state.items():
        t = value.detach()
        ptr = t.untyped_storage().data_ptr() if t.device.type != "meta" and t.numel() else None
        if ptr is not None and ptr in seen:
            t = t.clone()
        elif ptr is not None:
            seen.add(ptr)
        out[key] = t.contiguous()
    return out
