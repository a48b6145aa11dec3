"""Losses that only move when the model does: every named loss and metric of the backbone on a fixed set of
examples, each with its own fixed noise (generator seeds from the example's key), in eval mode (no dropout, no
condition dropout), one example at a time (no padding).

``val/<name>`` is measured on ALL of the held-out validation set every ``trainer.val_check_interval`` steps;
``train_fixed/<name>`` on the first few training examples (how well the model fits what it trains on, not how
it generalises). Two runs whose weights are identical get identical numbers, so the jobs of a sweep compare on
the same values.
"""
from __future__ import annotations

import hashlib
from typing import Any

import torch

from audiotrain.train.callbacks import Periodic

TRAIN_FIXED_EXAMPLES = 8  # training examples in train_fixed/*


def noise_seed(key: str, draw: int) -> int:
    """The generator seed of one example's ``draw``-th noise draw: from its key, so the same example gets the
    same noise whatever its position in the set."""
    return int(hashlib.sha256(f"{key}\x00{draw}".encode("utf-8", "surrogatepass")).hexdigest()[:15], 16)


def fixed_noise_losses(module: Any, dataset: Any, draws: int, limit: int | None = None) -> dict[str, float]:
    """Mean of every named loss/metric of ``module.backbone`` over the examples of ``dataset`` (the first
    ``limit``, else all) × ``draws`` fixed noise draws, in eval mode, without gradients. Conditioning prompts
    (same-speaker clips) come from ``dataset`` itself."""
    backbone = module.backbone
    n = len(dataset) if limit is None else min(int(limit), len(dataset))
    totals: dict[str, float] = {}
    count = 0
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), module.examples_from(dataset):
            for i in range(n):
                ex = dataset[i]
                feats = module.features([ex], salt=i)
                device = module.device if module.device.type != "meta" else torch.device("cpu")
                for r in range(int(draws)):
                    gen = torch.Generator(device=device).manual_seed(noise_seed(str(ex["key"]), r))
                    for name, value in backbone.training_losses(feats, generator=gen).items():
                        totals[name] = totals.get(name, 0.0) + float(value)
                    count += 1
    finally:
        module.train(was_training)
    return {name: total / max(count, 1) for name, total in totals.items()}


class FixedNoiseLoss(Periodic):
    """``<prefix>/<name>`` for every loss/metric, at the start, every ``every`` optimizer steps and at the end."""

    def __init__(self, prefix: str, every: int, dataset: Any, draws: int, tracker: Any, limit: int | None = None):
        self.prefix, self.every, self.dataset, self.draws = prefix, int(every), dataset, int(draws)
        self.tracker, self.limit = tracker, limit
        self.history: list[tuple[int, dict[str, float]]] = []

    @property
    def values(self) -> list[tuple[int, float]]:
        """``(step, <prefix>/loss)`` per measurement."""
        return [(step, m[f"{self.prefix}/loss"]) for step, m in self.history]

    def measure(self, pl_module: Any) -> dict[str, float]:
        losses = fixed_noise_losses(pl_module, self.dataset, self.draws, self.limit)
        return {f"{self.prefix}/{k}": v for k, v in losses.items()}

    def _run(self, trainer, pl_module) -> None:
        step = trainer.global_step
        if self.history and self.history[-1][0] == step:
            return
        metrics = self.measure(pl_module)
        self.history.append((step, metrics))
        if self.tracker is not None:
            self.tracker.log_metrics(metrics, step)
