"""Loading a state dict strictly, with one sentence a user can act on when it does not fit.

``torch``'s own strict load raises a wall of key names; :func:`check_state_dict` says instead how many keys
are missing, unexpected and mis-shaped, names the first few of each, and what to do.
"""
from __future__ import annotations

from typing import Mapping

import torch

from audiotrain.errors import UserError

SHOWN = 3  # keys named per kind


class StateDictMismatch(UserError):
    """The weights do not fit the model they are loaded into."""


def _examples(names: list[str]) -> str:
    return ", ".join(names[:SHOWN]) + (", ..." if len(names) > SHOWN else "")


def mismatch_message(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str, target: str,
                     fix: str) -> str | None:
    """None when keys and shapes match exactly, else the sentence :func:`check_state_dict` raises."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k} {list(state[k].shape)} vs {list(own[k].shape)}" for k in set(own) & set(state)
                    if tuple(state[k].shape) != tuple(own[k].shape))
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {_examples(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {_examples(unexpected)})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches (file vs model, e.g. {_examples(shapes)})")
    if not parts:
        return None
    return f"{source} does not match {target}: {'; '.join(parts)}; {fix}."


def check_state_dict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str, target: str,
                     fix: str) -> None:
    """Raise :class:`StateDictMismatch` (one sentence) unless ``state`` has exactly ``model``'s keys and shapes.

    ``source`` names the file, ``target`` the model ("the model built from its config"), ``fix`` what to do
    ("give the weights of that preset"). Works on a model built on the meta device.
    """
    message = mismatch_message(model, state, source, target, fix)
    if message:
        raise StateDictMismatch(message)


def load_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str, target: str, fix: str,
                assign: bool = False) -> torch.nn.Module:
    """:func:`check_state_dict`, then ``load_state_dict(strict=True)`` (``assign`` for meta-built models)."""
    check_state_dict(model, state, source, target, fix)
    model.load_state_dict(state, strict=True, assign=assign)
    return model
