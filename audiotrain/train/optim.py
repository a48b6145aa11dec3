"""Optimizers and learning-rate schedules named in ``optimizer=`` / ``scheduler=``.

Every schedule is a closed-form multiplier of the base lr at optimizer step ``s`` (0-based), so a resumed run
gets exactly the lr an uninterrupted one would (TorToiSe's recursive schedulers drift after a resume; ours don't).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

OPTIMIZERS = ("adamw", "adamw8bit")
SCHEDULERS = ("constant", "warmup_linear", "cosine", "multistep", "cosine_restarts")


def embedding_weights(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The weights of every ``nn.Embedding`` in ``module`` (token and position tables: rows a step mostly leaves
    untouched, whose rare updates 8-bit state quantises badly)."""
    return [m.weight for m in module.modules() if isinstance(m, torch.nn.Embedding)]


def build_optimizer(cfg: Any, params: Iterable[torch.nn.Parameter] | Sequence[Mapping[str, Any]],
                    full_state: Iterable[torch.nn.Parameter] = ()) -> torch.optim.Optimizer:
    """AdamW / AdamW8bit over ``params``: plain parameters (one group, the trainable ones) or the param groups of
    :func:`audiotrain.train.param_groups.torch_param_groups` (each with its own lr and weight decay). The
    optimizer's default lr is ``cfg.lr`` (the base lr the schedule and ``lr X`` refer to). With AdamW8bit the
    parameters in ``full_state`` keep 32-bit state when ``cfg.embeddings_32bit`` (default on: what
    bitsandbytes' own ``Embedding`` layer asks for, and DL-Art-School's default)."""
    params = list(params)
    if params and isinstance(params[0], Mapping):
        groups: list = [dict(g, params=[p for p in g["params"] if p.requires_grad]) for g in params]
        groups = [g for g in groups if g["params"]]
    else:
        groups = [p for p in params if p.requires_grad]
    kw = dict(lr=float(cfg.lr), betas=tuple(float(b) for b in cfg.betas), eps=float(cfg.eps),
              weight_decay=float(cfg.weight_decay))
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, **kw)
    if cfg.name == "adamw8bit":
        keep = [p for p in full_state if p.requires_grad] if cfg.get("embeddings_32bit", True) else []
        return adamw8bit_class()(groups, full_state=keep, **kw)
    raise ValueError(f"optimizer={cfg.name} is unknown: use one of {', '.join(OPTIMIZERS)}.")


def adamw8bit_class():
    """bitsandbytes' AdamW8bit, with 32-bit Adam state for the parameters given as ``full_state`` — the override
    bitsandbytes keeps in a process-wide manager keyed by ``id()``, kept here on the optimizer itself (so two
    optimizers in one process, or a parameter id reused after a model is freed, cannot mix their settings)."""
    import bitsandbytes as bnb

    class AdamW8bit(bnb.optim.AdamW8bit):
        def __init__(self, params, full_state: Iterable[torch.nn.Parameter] = (), **kw):
            super().__init__(params, **kw)
            self.full_state = {id(p) for p in full_state}

        def get_config(self, gindex, pindex, group):
            config = super().get_config(gindex, pindex, group)
            if id(self.param_groups[gindex]["params"][pindex]) in self.full_state:
                config["optim_bits"] = 32
            return config

    return AdamW8bit


def lr_factor(name: str, step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the base lr at optimizer step ``step`` for the simple schedules."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup if name != "warmup_linear" else step / warmup
    if name == "constant":
        return 1.0
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    if name == "warmup_linear":
        return max(0.0, 1.0 - progress)
    if name == "cosine":
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"scheduler={name} is unknown: use one of {', '.join(SCHEDULERS)}.")


def multistep_factor(step: int, milestones: list[int], gamma: float) -> float:
    """gamma ** (number of milestones already reached) — TorToiSe's MultiStep (lr × 0.5 at each milestone)."""
    return gamma ** sum(1 for m in milestones if step >= m)


def restart_weights(restarts: int) -> list[float]:
    """TorToiSe's weights of the restarts: (R−k−1)/R, the last replaced by half of the one before (R=4 → .75 .5 .25 .125)."""
    w = [(restarts - k - 1) / restarts for k in range(restarts)]
    if restarts >= 2:
        w[-1] = w[-2] / 2
    return w


def cosine_restarts_factor(step: int, period: int, restarts: int, min_ratio: float) -> float:
    """Cosine from the cycle's peak to ``min_ratio`` over ``period`` steps; cycle k > 0 peaks at restart_weights[k−1]."""
    period = max(1, period)
    k = min(step // period, restarts)
    peak = 1.0 if k == 0 else restart_weights(restarts)[k - 1]
    t = min(step - k * period, period)
    return min_ratio + (peak - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t / period))


def schedule(cfg: Any, total_steps: int, steps_per_epoch: int | None, base_lr: float) -> Callable[[int], float]:
    """The multiplier function of ``scheduler=``; raises ValueError on an unknown name."""
    name, warmup = str(cfg.name), int(cfg.get("warmup_steps", 0) or 0)
    if name == "multistep":
        milestones = [int(m) for m in (cfg.get("milestones") or [])]
        if not milestones and cfg.get("milestones_epochs"):
            spe = max(1, int(steps_per_epoch or 1))
            milestones = [int(e * spe) for e in cfg.milestones_epochs]
        gamma = float(cfg.get("gamma", 0.5))
        return lambda s: ((s + 1) / warmup if warmup and s < warmup else 1.0) * multistep_factor(s, milestones, gamma)
    if name == "cosine_restarts":  # after the warm-up, the cycles fill the remaining steps
        restarts = max(1, int(cfg.get("restarts", 4)))
        period = int(cfg.get("period_steps") or max(1, (total_steps - warmup) // restarts))
        min_ratio = float(cfg.get("eta_min", 1e-8)) / base_lr if base_lr > 0 else 0.0
        return lambda s: ((s + 1) / warmup if s < warmup else
                          cosine_restarts_factor(s - warmup, period, restarts, min_ratio))
    min_ratio = float(cfg.get("min_lr_ratio", 0.0) or 0.0)
    lr_factor(name, 0, warmup, total_steps, min_ratio)  # fail early on an unknown name
    return lambda s: lr_factor(name, s, warmup, total_steps, min_ratio)


def build_scheduler(cfg: Any, optimizer: torch.optim.Optimizer, total_steps: int,
                    steps_per_epoch: int | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR: each param group's lr is its own initial lr (base lr x lr_mult) times the schedule's factor.
    The factor's absolute floors (``eta_min``) refer to the optimizer's base lr, not one group's."""
    base_lr = float(optimizer.defaults.get("lr", optimizer.param_groups[0]["lr"]))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(cfg, total_steps, steps_per_epoch, base_lr))
