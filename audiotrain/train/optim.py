"""Optimizers and learning-rate schedules named in ``optimizer=`` / ``scheduler=``."""
from __future__ import annotations

import math
from typing import Any, Iterable

import torch

OPTIMIZERS = ("adamw", "adamw8bit")
SCHEDULERS = ("constant", "warmup_linear", "cosine")


def build_optimizer(cfg: Any, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    kw = dict(lr=float(cfg.lr), betas=tuple(float(b) for b in cfg.betas), eps=float(cfg.eps),
              weight_decay=float(cfg.weight_decay))
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, **kw)
    if cfg.name == "adamw8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, **kw)
    raise ValueError(f"optimizer={cfg.name} is unknown: use one of {', '.join(OPTIMIZERS)}.")


def lr_factor(name: str, step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the base lr at optimizer step ``step`` (0-based)."""
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


def build_scheduler(cfg: Any, optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    name, warmup = str(cfg.name), int(cfg.get("warmup_steps", 0) or 0)
    min_ratio = float(cfg.get("min_lr_ratio", 0.0) or 0.0)
    lr_factor(name, 0, warmup, total_steps, min_ratio)  # fail early on an unknown name
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(name, step, warmup, total_steps, min_ratio))
