"""model.quantize (QLoRA) in the core: the layers it swaps and keeps, the settings it refuses, and a CLI run whose
adapter merges into the unquantised model. (Every plugin trains with it: tests/contract/test_plugin_contract.py.)"""
from __future__ import annotations

import bitsandbytes as bnb
import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from audiotrain.config.validate import deepspeed_problems, training_plan_problems
from audiotrain.lora.quantize import input_dtype, quantize_base
from tests.conftest import compose


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.Linear(64, 128)
        self.gpt = Conv1D(64, 128)  # GPT-2's (in, out) layer: 128 inputs, 64 outputs
        self.small = nn.Linear(48, 8)  # inputs not a multiple of NF4's block of 64
        self.emb = nn.Embedding(10, 64)

    def forward(self, x):
        return self.small(self.gpt(self.up(x))[..., :48])


def test_nf4_swaps_the_linear_layers_and_keeps_what_it_cannot_quantise():
    torch.manual_seed(0)
    net = Net()
    x = torch.randn(3, 64)
    want = net(x)
    n = quantize_base(net, "nf4")
    assert isinstance(net.up, bnb.nn.Linear4bit) and isinstance(net.gpt, bnb.nn.Linear4bit)
    assert isinstance(net.small, nn.Linear) and isinstance(net.emb, nn.Embedding)
    assert n == 64 * 128 * 2 and net.is_loaded_in_4bit
    assert (net.gpt.in_features, net.gpt.out_features) == (128, 64)  # the Conv1D's weight, turned
    got = net(x)
    assert got.shape == want.shape and (got - want).abs().mean() < 0.1 * want.abs().mean()
    assert input_dtype(net.up) == torch.float32 and input_dtype(net.small) == torch.float32


def test_int8_swaps_every_linear_layer():
    net = Net()
    quantize_base(net, "int8")
    assert all(isinstance(m, bnb.nn.Linear8bitLt) for m in (net.up, net.gpt, net.small)) and net.is_loaded_in_8bit


def test_settings_it_refuses_in_one_sentence_each():
    assert training_plan_problems(compose(["model=acestep", "model.quantize=nf4"]), None) == []
    (bad,) = training_plan_problems(compose(["model=acestep", "model.quantize=fp3"]), None)
    assert bad.startswith("model.quantize=fp3 is not a quantisation: use nf4")
    (full,) = training_plan_problems(compose(["model=acestep", "model.quantize=int8", "lora=none"]), None)
    assert full.startswith("model.quantize=int8 holds the frozen base in int8, but lora=none trains every weight")
    problems = deepspeed_problems(compose(["model=acestep", "model.quantize=nf4", "backend=deepspeed"]))
    assert any(p.startswith("model.quantize=nf4 cannot run under backend=deepspeed") for p in problems)
    with pytest.raises(Exception, match="not a quantisation"):
        quantize_base(Net(), "fp3")


@pytest.mark.parametrize("mode", ["nf4", "int8"])
def test_the_lora_weights_on_a_quantised_base_are_fp32_under_bf16_autocast(mode):
    """PEFT makes the LoRA of an NF4 layer in the layer's compute dtype (bf16 under bf16-mixed): the run keeps every
    trainable weight in fp32 - the optimizer's master copy - so an update below bf16's resolution (1 + 1e-4 == 1 in bf16) is not lost."""
    from audiotrain.plugins import registry
    from audiotrain.train.model_setup import build_model

    cfg = compose(["model=valle", "model.preset=tiny", "lora.r=4", f"model.quantize={mode}", "precision=bf16-mixed"])
    built = build_model(cfg, registry.get("valle"), report=False)
    trainable = [(n, p) for n, p in built.backbone.named_parameters() if p.requires_grad]
    assert built.quantised > 0 and trainable
    assert {p.dtype for _, p in trainable} == {torch.float32}, [n for n, p in trainable if p.dtype != torch.float32]
