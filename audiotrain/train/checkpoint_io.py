"""Checkpoint files written straight to disk, and read as data.

Lightning's default writer serialises the whole checkpoint into an in-memory buffer, copies it out and then
writes it: a transient two to three times the checkpoint in host memory at every save (for a full fine-tune
of a 3.3 B model, tens of GB). This one ``torch.save``s into a temporary file beside the target (through a
Python file, so a full disk is an ``OSError`` with its errno), flushes it and renames it into place: atomic (a
process killed at any moment leaves the previous complete ``.ckpt`` under the real name, never a half-written
one), without the copies. A full disk is one sentence naming the file and the checkpoint that is kept.

Reading (``ckpt_path=``, ``resume=auto``: Lightning's restore) goes through :func:`audiotrain.safe_files.load_torch`:
``weights_only=True`` unless ``trust_pickle=true``, and a file that is truncated, not a checkpoint or carries code
is one sentence (a UserError), never run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from audiotrain.atomic_write import atomic_path, is_temporary
from audiotrain.train.checkpoint_check import EXPECTED
from audiotrain.train.finite import check_finite

DISK_FULL_FIX = ("free some space, or set paths.log_dir= to a disk with room or trainer.keep_last_n= to a smaller "
                 "number, then resume with resume=auto")


def previous_checkpoint(target: str | Path) -> Path | None:
    """The newest complete checkpoint beside ``target`` (``target`` itself when it exists): what survives a failed
    save of ``target``."""
    target = Path(target)
    if target.exists():
        return target
    folder = target.parent
    found = [p for p in folder.glob("*.ckpt") if not is_temporary(p.name)] if folder.is_dir() else []
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def kept_clause(previous: Path | None, what: str = "checkpoint") -> str:
    return f"the previous {what} {previous} is kept" if previous is not None else f"no earlier {what} was written"



class DirectCheckpointIO(TorchCheckpointIO):
    def __init__(self, trust_pickle: bool = False, option: str | None = None) -> None:
        super().__init__()
        self.trust_pickle = trust_pickle  # the DANGEROUS opt-in: unpickle fully (runs code a file carries)
        self.option = option              # how sentences name the file (ckpt_path=FILE), None: by its path

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("DirectCheckpointIO.save_checkpoint takes no storage_options.")
        check_finite(checkpoint.get("state_dict") or {}, f"the checkpoint {path}")  # never NaN/Inf weights
        with atomic_path(path, kept=lambda: kept_clause(previous_checkpoint(path)), fix=DISK_FULL_FIX) as tmp:
            with open(tmp, "wb") as fh:
                torch.save(checkpoint, fh)

    def load_checkpoint(self, path: Any, map_location: Any | None = None, weights_only: bool | None = None) -> dict[str, Any]:
        from audiotrain.safe_files import load_torch

        # map_location: Lightning's default keeps storages where they were saved; "cpu" is where restore wants them
        return load_torch(path, option=self.option, expected=EXPECTED, trust_pickle=self.trust_pickle,
                          map_location="cpu" if map_location is None or callable(map_location) else map_location,
                          instead=EXPECTED)
