"""Checkpoint files written straight to disk.

Lightning's default writer serialises the whole checkpoint into an in-memory buffer, copies it out and then
writes it: a transient two to three times the checkpoint in host memory at every save (for a full fine-tune
of a 3.3 B model, tens of GB). This one ``torch.save``s into a temporary file beside the target and renames it
into place: as atomic (a crash never leaves a half-written ``.ckpt`` under the real name), without the copies.
"""
from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from audiotrain.atomic_write import atomic_path
from audiotrain.train.finite import check_finite


class DirectCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("DirectCheckpointIO.save_checkpoint takes no storage_options.")
        check_finite(checkpoint.get("state_dict") or {}, f"the checkpoint {path}")  # never NaN/Inf weights
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)
