"""Learning-rate schedules: closed-form values at the points that define them."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from audiotrain.train.optim import build_scheduler, restart_weights


def lrs(cfg: dict, steps: int, total: int = 100, spe: int | None = None, lr: float = 1.0) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = build_scheduler(OmegaConf.create(cfg), opt, total, steps_per_epoch=spe)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_multistep_halves_at_each_epoch_milestone():
    v = lrs({"name": "multistep", "milestones": None, "milestones_epochs": [2, 4], "gamma": 0.5}, 60, spe=10)
    assert v[19] == 1.0 and v[20] == 0.5 and v[39] == 0.5 and v[40] == 0.25 and v[59] == 0.25


def test_cosine_restarts_peaks_follow_tortoise_weights():
    assert restart_weights(4) == [0.75, 0.5, 0.25, 0.125]
    v = lrs({"name": "cosine_restarts", "restarts": 4, "period_steps": 10, "eta_min": 0.0}, 50)
    assert v[0] == 1.0 and v[10] == 0.75 and v[20] == 0.5 and v[30] == 0.25 and v[40] == pytest.approx(0.125)
    assert v[5] == pytest.approx(0.5) and v[9] < 0.03


def test_warmup_linear_and_cosine_end_at_zero():
    assert lrs({"name": "warmup_linear", "warmup_steps": 10}, 101)[100] == 0.0
    v = lrs({"name": "cosine", "warmup_steps": 0, "min_lr_ratio": 0.1}, 101)
    assert v[0] == 1.0 and v[100] == pytest.approx(0.1)
