"""Checkpoints are written straight to a temporary file and renamed into place."""
from __future__ import annotations

import pytest
import torch

from audiotrain.train.checkpoint_io import DirectCheckpointIO


def test_writes_a_loadable_checkpoint_and_leaves_no_temporary_file(tmp_path):
    io = DirectCheckpointIO()
    target = tmp_path / "checkpoints" / "step=3.ckpt"
    state = {"state_dict": {"w": torch.arange(6.0).reshape(2, 3)}, "global_step": 3}
    io.save_checkpoint(state, target)
    loaded = io.load_checkpoint(target)
    assert loaded["global_step"] == 3 and torch.equal(loaded["state_dict"]["w"], state["state_dict"]["w"])
    assert sorted(p.name for p in target.parent.iterdir()) == ["step=3.ckpt"]


def test_a_failed_save_keeps_the_previous_file(tmp_path):
    io = DirectCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1}, target)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle this")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        io.save_checkpoint({"global_step": 2, "bad": Unpicklable()}, target)
    assert io.load_checkpoint(target)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
