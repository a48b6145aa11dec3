"""Optimizer parameter groups: the Backbone seam, the no_decay rule, lr multipliers through the schedule and `lr X`."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from audiotrain.models.backbone import Backbone
from audiotrain.train.control import set_lr
from audiotrain.train.optim import build_optimizer, build_scheduler
from audiotrain.train.param_groups import (ParamGroup, ParamGroupError, assign, counts, no_decay_group,
                                           torch_param_groups)


class RMSNorm(nn.Module):  # a plugin's own norm layer (not a torch class)
    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))


class Net(Backbone):
    def __init__(self, groups=()):
        super().__init__()
        self._groups = list(groups)
        self.embed = nn.Embedding(10, 4)
        self.proj = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.rms = RMSNorm(4)
        self.head = nn.Linear(4, 2, bias=False)

    def parameter_groups(self):
        return self._groups or super().parameter_groups()

    def training_losses(self, batch, generator=None):
        x = self.rms.weight * self.norm(self.proj(self.embed(batch["ids"])))
        return {"loss": self.head(x).pow(2).mean()}


def opt_cfg(name="adamw", **groups):
    return OmegaConf.create({"name": name, "lr": 1e-2, "weight_decay": 0.1, "betas": [0.9, 0.99], "eps": 1e-8,
                             "groups": groups})


def ids(params):
    return [id(p) for p in params]


def test_default_is_one_group_of_every_trainable_parameter_in_order():
    net = Net()
    net.head.weight.requires_grad_(False)
    opt = build_optimizer(opt_cfg(), torch_param_groups(net, opt_cfg()))
    assert len(opt.param_groups) == 1
    g = opt.param_groups[0]
    assert (g["name"], g["lr"], g["weight_decay"], g["lr_mult"]) == ("default", 1e-2, 0.1, 1.0)
    assert ids(g["params"]) == ids(p for p in net.parameters() if p.requires_grad)
    # the same optimizer the plain-parameter call builds (what every plugin trained with before)
    plain = build_optimizer(opt_cfg(), net.parameters())
    assert ids(plain.param_groups[0]["params"]) == ids(g["params"])
    assert plain.param_groups[0]["weight_decay"] == g["weight_decay"] and plain.param_groups[0]["lr"] == g["lr"]


def test_no_decay_rule_takes_biases_norms_and_embeddings():
    net = Net([no_decay_group()])
    groups = {g["name"]: g for g in torch_param_groups(net, opt_cfg())}
    assert set(groups) == {"no_decay", "default"}
    by_id = {id(p): n for n, p in net.named_parameters()}
    assert sorted(by_id[id(p)] for p in groups["no_decay"]["params"]) == \
        ["embed.weight", "norm.bias", "norm.weight", "proj.bias", "rms.weight"]
    assert sorted(by_id[id(p)] for p in groups["default"]["params"]) == ["head.weight", "proj.weight"]
    assert groups["no_decay"]["weight_decay"] == 0.0 and groups["default"]["weight_decay"] == 0.1
    # every trainable parameter in exactly one group
    seen = [id(p) for g in groups.values() for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in net.parameters()) and len(seen) == len(set(seen))


def test_every_parameter_lands_in_exactly_one_group_with_overlapping_rules():
    overlap = ParamGroup("proj_all", ["proj"], lr_mult=0.5)  # proj.bias also matches no_decay: first match wins
    net = Net([overlap, no_decay_group()])
    net.norm.weight.requires_grad_(False)
    assigned = assign(net, [*net.parameter_groups(), ParamGroup("default", lambda *_: True)])
    names = [n for pairs in assigned.values() for n, _ in pairs]
    assert sorted(names) == sorted(n for n, _ in net.named_parameters()) and len(names) == len(set(names))
    assert [n for n, _ in assigned["proj_all"]] == ["proj.weight", "proj.bias"]
    table = counts(net, opt_cfg())
    assert table == {"proj_all": (20, 0), "no_decay": (40 + 4 + 4, 4), "default": (8, 0)}


def test_config_lr_mult_reaches_the_optimizer_and_the_schedule():
    cfg = opt_cfg(no_decay={"lr_mult": 0.1}, heads={"match": ["head*"], "lr_mult": 3.0, "weight_decay": 0.5})
    net = Net()
    opt = build_optimizer(cfg, torch_param_groups(net, cfg))
    got = {g["name"]: (g["lr"], g["weight_decay"]) for g in opt.param_groups}
    assert got == {"heads": (pytest.approx(3e-2), 0.5), "no_decay": (pytest.approx(1e-3), 0.0),
                   "default": (pytest.approx(1e-2), 0.1)}
    sched = build_scheduler(OmegaConf.create({"name": "warmup_linear", "warmup_steps": 4}), opt, total_steps=14)
    lrs = []
    for _ in range(10):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    # LambdaLR scales each group's own initial lr by the one factor: step s < 4 → s/4, then linear to 0 at 14
    for s, row in enumerate(lrs):
        f = s / 4 if s < 4 else 1 - (s - 4) / 10
        assert row == pytest.approx([1e-3 * f, 3e-2 * f, 1e-2 * f])  # config order, then default


def test_cosine_restart_floor_refers_to_the_base_lr_not_the_first_group():
    cfg = opt_cfg(no_decay={"lr_mult": 0.1})
    net = Net()
    opt = build_optimizer(cfg, torch_param_groups(net, cfg))
    assert opt.param_groups[0]["name"] == "no_decay"
    sched = build_scheduler(OmegaConf.create({"name": "cosine_restarts", "restarts": 2, "period_steps": 4,
                                              "eta_min": 1e-3}), opt, total_steps=8)
    for _ in range(2):
        opt.step()
        sched.step()
    # half-way down the first cycle: floor eta_min / base lr = 0.1, factor 0.1 + 0.9 * 0.5 = 0.55 for every group
    # (taking group 0's lr 1e-3 as the base would make the floor 1 and the factor 1)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3 * 0.55, 1e-2 * 0.55])


def test_live_lr_command_keeps_each_groups_multiplier():
    cfg = opt_cfg(no_decay={"lr_mult": 0.25})
    net = Net()
    opt = build_optimizer(cfg, torch_param_groups(net, cfg))
    sched = build_scheduler(OmegaConf.create({"name": "cosine", "warmup_steps": 0}), opt, total_steps=10)
    for _ in range(3):
        opt.step()
        sched.step()
    trainer = type("T", (), {"optimizers": [opt], "lr_scheduler_configs": [type("C", (), {"scheduler": sched})]})
    set_lr(trainer, 0.4)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1, 0.4])
    opt.step()
    sched.step()
    a, b = (g["lr"] for g in opt.param_groups)
    assert a / b == pytest.approx(0.25) and b < 0.4  # the cosine continues from 0.4, the ratio stays


def test_unknown_group_is_one_sentence_naming_the_choices():
    with pytest.raises(ParamGroupError, match=r"optimizer.groups.nodecay names no parameter group.*default, no_decay"):
        torch_param_groups(Net(), opt_cfg(nodecay={"lr_mult": 0.1}))
    with pytest.raises(ParamGroupError, match="redefines the group 'default'"):
        torch_param_groups(Net(), opt_cfg(default={"match": ["x"]}))


def test_validate_checks_group_entries():
    from audiotrain.config.validate import training_plan_problems

    cfg = OmegaConf.create({"model": {"freeze": "lyric", "init_from": None},
                            "optimizer": {"groups": {"a": {"lr_mul": 2}, "b": {"lr_mult": -1, "weight_decay": "x"},
                                                     "c": {"match": "head"}}}})
    problems = training_plan_problems(cfg, None)
    assert len(problems) == 5, problems
    assert problems[0].startswith("model.freeze=lyric must be a list")
    assert "optimizer.groups.a.lr_mul is unknown: use lr_mult, weight_decay, match (did you mean lr_mult?)." in problems
    assert any(s.startswith("optimizer.groups.b.lr_mult=-1 must be") for s in problems)
    assert any(s.startswith("optimizer.groups.b.weight_decay=x must be") for s in problems)
    assert any(s.startswith("optimizer.groups.c.match=head must be a list") for s in problems)


def test_optimizer_state_keeps_groups_names_and_multipliers():
    cfg = opt_cfg(no_decay={"lr_mult": 0.5})
    net = Net()
    opt = build_optimizer(cfg, torch_param_groups(net, cfg))
    net.training_losses({"ids": torch.tensor([[1, 2]])})["loss"].backward()
    opt.step()
    fresh = build_optimizer(cfg, torch_param_groups(net, cfg))
    fresh.load_state_dict(opt.state_dict())
    assert [(g["name"], g["lr_mult"], g["lr"]) for g in fresh.param_groups] == \
        [(g["name"], g["lr_mult"], g["lr"]) for g in opt.param_groups]


def test_adamw8bit_builds_the_same_groups_and_steps():
    cfg = opt_cfg("adamw8bit", no_decay={"lr_mult": 0.1})
    net = Net()
    opt = build_optimizer(cfg, torch_param_groups(net, cfg))
    assert type(opt).__name__ == "AdamW8bit"
    assert [(g["name"], g["weight_decay"]) for g in opt.param_groups] == [("no_decay", 0.0), ("default", 0.1)]
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3, 1e-2])
    before = net.proj.weight.detach().clone()
    net.training_losses({"ids": torch.tensor([[1, 2, 3]])})["loss"].backward()
    opt.step()
    assert not torch.equal(before, net.proj.weight)
