"""model.freeze: patterns freeze exactly the matching parameters; an unknown pattern is one sentence; counts per group."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from audiotrain.config.validate import ConfigError, training_plan_problems, validate
from audiotrain.lora import adapter as lora_adapter
from audiotrain.lora.adapter import LoRASettings
from audiotrain.models.backbone import Backbone
from audiotrain.train import freeze
from audiotrain.train.param_groups import no_decay_group
from audiotrain.train.trainable import apply_training_plan


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(4)
        self.to_q = nn.Linear(4, 4)
        self.to_k = nn.Linear(4, 4)


class Net(Backbone):
    def __init__(self, groups=()):
        super().__init__()
        self._groups = list(groups)
        self.body = nn.Module()
        self.body.blocks = nn.ModuleList([Block(), Block()])
        self.body.embed = nn.Embedding(6, 4)
        self.body.head = nn.Linear(4, 3)

    def adapter_root(self):
        return self.body

    def parameter_groups(self):
        return self._groups

    def training_losses(self, batch, generator=None):
        return {"loss": torch.zeros(())}


def cfg_of(patterns, **groups):
    return OmegaConf.create({"model": {"freeze": list(patterns), "init_from": None},
                             "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.01, "groups": groups}})


def trainable_names(net):
    return sorted(n for n, p in net.body.named_parameters() if p.requires_grad)


def test_suffix_and_glob_patterns_freeze_exactly_the_matches_in_a_full_finetune():
    net = Net()
    plan = apply_training_plan(net, cfg_of(["to_q", "blocks.1.*", "head.bias"]), None)
    assert trainable_names(net) == ["blocks.0.norm.bias", "blocks.0.norm.weight", "blocks.0.to_k.bias",
                                    "blocks.0.to_k.weight", "embed.weight", "head.weight"]
    # frozen: to_q of block 0 (20), all of block 1 (8 + 20 + 20), head.bias (3)
    assert plan.frozen_by_patterns == 20 + 48 + 3
    assert plan.groups == {"default": (8 + 20 + 24 + 12, 71)}
    assert plan.params == {"params.trainable": 64, "params.frozen": 71, "params.trainable.default": 64,
                           "params.frozen.default": 71}


def test_freeze_after_lora_keeps_frozen_lora_weights_frozen_and_counts_per_group():
    net = Net([no_decay_group()])
    lora_adapter.attach(net.body, LoRASettings(r=2, alpha=4, target_modules=["to_q", "to_k"]))
    plan = apply_training_plan(net, cfg_of(["blocks.0.*lora_B*"]), LoRASettings(r=2, alpha=4, target_modules=["to_q", "to_k"]))
    train = trainable_names(net)
    assert all("lora_" in n for n in train) and len(train) == 6  # 8 LoRA matrices, block 0's two lora_B frozen
    assert not any(n.startswith("blocks.0.") and "lora_B" in n for n in train)
    # every LoRA matrix is 2x4 or 4x2 = 8 elements; base weights are all frozen by the adapter
    base = sum(p.numel() for n, p in net.body.named_parameters() if "lora_" not in n)
    assert base == 2 * (8 + 20 + 20) + 24 + 15
    no_decay_base = 2 * 8 + 2 * 2 * 4 + 24 + 3  # the norms, the to_q/to_k biases, the embedding, head.bias
    assert plan.groups == {"no_decay": (0, 59), "default": (6 * 8, base - no_decay_base + 2 * 8)}
    assert "no_decay" in plan.table() and "48" in plan.table().splitlines()[-1]


def test_unknown_pattern_is_one_sentence_with_close_names():
    net = Net()
    with pytest.raises(freeze.FreezeError) as err:
        apply_training_plan(net, cfg_of(["blokcs", "to_q"]), None)
    msg = str(err.value)
    assert msg.startswith("model.freeze has 'blokcs' (close names: blocks")
    assert "which matches no module or parameter of this model; use a module name or suffix" in msg
    assert "\n" not in msg
    assert all(p.requires_grad for p in net.parameters())  # refused before anything is frozen


def test_validate_checks_patterns_on_the_meta_model_lora_layers_included(tiny_cfg):
    from audiotrain.plugins import registry

    plugin = registry.get("acestep")
    ok = tiny_cfg("model.freeze=[lyric_encoder,transformer_blocks.0.*,*lora_B*,to_q]")
    assert training_plan_problems(ok, plugin) == []
    bad = tiny_cfg("model.freeze=[lyric_encodr]")
    problems = training_plan_problems(bad, plugin)
    assert len(problems) == 1 and problems[0].startswith("model.freeze has 'lyric_encodr' (close names: lyric_encoder")
    with pytest.raises(ConfigError, match="lyric_encodr"):
        validate(bad, plugin)
    # without LoRA there are no LoRA layers to freeze
    assert "'*lora_B*'" in training_plan_problems(tiny_cfg("lora=none", "model.freeze=[*lora_B*]"), plugin)[0]


def test_run_logs_counts_per_group_as_mlflow_params(tiny_cfg, tmp_path):
    from mlflow.tracking import MlflowClient

    from audiotrain.train.run import train

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    s = train(tiny_cfg("tracking=mlflow", f"tracking.uri={uri}", "trainer.max_steps=1",
                       "model.freeze=[transformer_blocks.1.*]", "+optimizer.groups.block0.match=[transformer_blocks.0.*]",
                       run="params"))
    params = MlflowClient(tracking_uri=uri).get_run(s["mlflow_run_id"]).data.params
    # LoRA r=16 on the 8 default targets of each block: to_q/k/v/out.0 of self- and cross-attention 32->32
    per_block = 8 * 16 * (32 + 32)
    assert int(params["params.trainable.block0"]) == per_block
    assert int(params["params.trainable"]) == s["trainable_params"] == int(params["lora.trainable_params"])
    assert int(params["params.frozen.block0"]) > 0
    assert int(params["params.trainable.default"]) == s["trainable_params"] - per_block
