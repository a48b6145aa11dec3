"""Resume restores every parameter group: a full fine-tune of tiny ACE-Step with three groups (different lr
multipliers and weight decays) and frozen modules, stopped and resumed, ends bit-identical to an uninterrupted run."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from audiotrain.train.run import train

GROUPS = ("lora=none", "+optimizer.groups.no_decay.lr_mult=0.5",
          "+optimizer.groups.block1.match=[transformer_blocks.1.*]", "+optimizer.groups.block1.lr_mult=2.0",
          "+optimizer.groups.block1.weight_decay=0.05", "model.freeze=[lyric_encoder,speaker_embedder]",
          "trainer.every_n_train_steps=3", "dataset.repeat_count=2", "optimizer.lr=1e-3", "scheduler=cosine")


@pytest.mark.slow  # three tiny training runs
def test_resume_with_groups_and_frozen_modules_is_bit_identical(tiny_cfg):
    def cfg(*extra, run):
        return tiny_cfg(*GROUPS, *extra, run=run)

    full = train(cfg("trainer.max_steps=6", run="full"))
    half = train(cfg("trainer.max_steps=3", run="half"))
    ckpt = f"{half['run_dir']}/checkpoints/last.ckpt"
    resumed = train(cfg("trainer.max_steps=6", f"ckpt_path={ckpt}", run="ignored"))
    assert resumed["run_dir"] == half["run_dir"] and resumed["steps"] == full["steps"] == 6
    assert resumed["last_loss"] == full["last_loss"]
    assert resumed["train_fixed_loss"][-1] == full["train_fixed_loss"][-1] and resumed["train_fixed_loss"][-1][0] == 6
    a = load_file(f"{full['adapter_dir']}/model.safetensors")
    b = load_file(f"{resumed['adapter_dir']}/model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    state = torch.load(f"{full['run_dir']}/checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    groups = state["optimizer_states"][0]["param_groups"]
    assert [(g["name"], g["lr_mult"], g["weight_decay"]) for g in groups] == \
        [("no_decay", 0.5, 0.0), ("block1", 2.0, 0.05), ("default", 1.0, 0.01)]
    # cosine over 6 steps: every group at base x lr_mult x the same factor
    factor = groups[2]["lr"] / 1e-3
    assert [g["lr"] for g in groups] == [0.5e-3 * factor, 2e-3 * factor, 1e-3 * factor] and 0 < factor < 1
    again = torch.load(f"{half['run_dir']}/checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    assert [g["lr"] for g in again["optimizer_states"][0]["param_groups"]] == [g["lr"] for g in groups]
    # frozen modules did not move between step 3 and step 6; every group's weights did
    at3 = load_file(f"{half['run_dir']}/adapters/step_3/model.safetensors")
    frozen = [k for k in a if k.startswith(("lyric_encoder.", "speaker_embedder."))]
    assert len(frozen) > 4 and all(torch.equal(a[k], at3[k]) for k in frozen)
    for moved in ("transformer_blocks.1.attn.to_q.weight", "transformer_blocks.0.attn.to_q.weight",  # block1, default
                  "transformer_blocks.0.attn.to_q.bias"):  # no_decay
        assert not torch.equal(a[moved], at3[moved]), moved
