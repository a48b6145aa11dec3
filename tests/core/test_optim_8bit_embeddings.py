"""optimizer=adamw8bit keeps the Adam state of embedding tables in 32 bits (bitsandbytes' own Embedding layer and
DL-Art-School's default), every other large tensor in 8 bits; ``optimizer.embeddings_32bit=false`` quantises them
too. The choice lives on the optimizer (not bitsandbytes' process-wide manager) and survives a resume."""
from __future__ import annotations

import copy

import torch
from omegaconf import OmegaConf
from torch import nn

from audiotrain.train.optim import build_optimizer, embedding_weights
from audiotrain.train.param_groups import torch_param_groups
from audiotrain.models.backbone import Backbone


class Net(Backbone):
    """Big enough that every tensor is above bitsandbytes' 4096-element floor for 8-bit state."""

    def __init__(self):
        super().__init__()
        self.tokens = nn.Embedding(512, 64)
        self.positions = nn.Embedding(128, 64)
        self.proj = nn.Linear(64, 128)

    def training_losses(self, batch, generator=None):
        ids = batch["ids"]
        x = self.tokens(ids) + self.positions(torch.arange(ids.shape[1]))
        return {"loss": self.proj(x).pow(2).mean()}


def cfg(**extra):
    return OmegaConf.create({"name": "adamw8bit", "lr": 1e-3, "weight_decay": 0.01, "betas": [0.9, 0.96],
                             "eps": 1e-8, **extra})


def one_step(net, c):
    opt = build_optimizer(c, torch_param_groups(net, c), full_state=embedding_weights(net))
    net.training_losses({"ids": torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(0))})[
        "loss"].backward()
    opt.step()
    return opt


def state_dtype(opt, p):
    return opt.state[p]["state1"].dtype


def test_embeddings_keep_32bit_state_and_the_rest_is_8bit():
    torch.manual_seed(0)
    net = Net()
    opt = one_step(net, cfg())
    assert state_dtype(opt, net.tokens.weight) == torch.float32
    assert state_dtype(opt, net.positions.weight) == torch.float32
    assert state_dtype(opt, net.proj.weight) == torch.uint8


def test_the_switch_quantises_the_embeddings_too():
    torch.manual_seed(0)
    net = Net()
    opt = one_step(net, cfg(embeddings_32bit=False))
    assert state_dtype(opt, net.tokens.weight) == torch.uint8 and state_dtype(opt, net.proj.weight) == torch.uint8


def test_another_optimizer_in_the_same_process_is_not_affected():
    torch.manual_seed(0)
    first = Net()
    one_step(first, cfg())
    second = Net()
    opt = one_step(second, cfg(embeddings_32bit=False))
    assert state_dtype(opt, second.tokens.weight) == torch.uint8


def test_resumed_state_keeps_its_dtypes_and_the_next_step_is_identical():
    torch.manual_seed(0)
    net = Net()
    opt = one_step(net, cfg())
    saved_net = {k: v.clone() for k, v in net.state_dict().items()}
    saved_opt = copy.deepcopy(opt.state_dict())  # state_dict() holds the live state tensors
    batch = {"ids": torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(1))}

    def step(n, o):
        o.zero_grad()
        n.training_losses(batch)["loss"].backward()
        o.step()
        return {k: v.clone() for k, v in n.state_dict().items()}

    straight = step(net, opt)
    again = Net()
    again.load_state_dict(saved_net)
    c = cfg()
    opt2 = build_optimizer(c, torch_param_groups(again, c), full_state=embedding_weights(again))
    opt2.load_state_dict(saved_opt)
    assert state_dtype(opt2, again.tokens.weight) == torch.float32
    assert state_dtype(opt2, again.proj.weight) == torch.uint8
    resumed = step(again, opt2)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
