"""``mode=plan``: what a run would do with this config and this data — then exit without training.

The data is prepared as a run prepares it (the report, the cache: a later run finds it built), the plugin's
adjustments to the data are applied and said (``Plugin.fit_to_data``), and the plan is printed: the length in
steps and epochs, the batch (examples per step, the chunks it is split into), the learning-rate schedule in
steps, when checkpoints and adapters are saved and when validation runs. No model is built, nothing is written
to MLflow and no run directory is left behind.
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from audiotrain.config.validate import validate
from audiotrain.plugins import registry
from audiotrain.train.backend import accelerator
from audiotrain.train.data_setup import load_data, val_every
from audiotrain.train.run import adjust_to_data, build_loader
from audiotrain.train.run_length import length_line


def _steps(cfg: DictConfig, spe: int) -> int | None:
    """The run's optimizer steps (None: no end)."""
    max_steps, max_epochs = int(cfg.trainer.max_steps), int(cfg.trainer.max_epochs)
    ends = [v for v in (max_steps if max_steps >= 0 else None, max_epochs * spe if max_epochs >= 0 else None)
            if v is not None]
    return min(ends) if ends else None


def schedule_line(cfg: DictConfig, spe: int, total: int | None) -> str:
    """The learning-rate schedule in optimizer steps."""
    s, lr = cfg.scheduler, float(cfg.optimizer.lr)
    name, warmup = str(s.name), int(s.get("warmup_steps") or 0)
    head = f"Learning rate {lr:g}, scheduler={name}" + (f" with {warmup} warm-up steps" if warmup else "")
    if name == "multistep":
        milestones = [int(m) for m in (s.get("milestones") or [])] or [int(e * spe) for e in
                                                                       (s.get("milestones_epochs") or [])]
        gamma = float(s.get("gamma", 0.5))
        return f"{head}: × {gamma:g} at steps {', '.join(map(str, milestones)) or '(none)'}."
    if name == "cosine_restarts":
        restarts = max(1, int(s.get("restarts", 4)))
        period = int(s.get("period_steps") or max(1, ((total or 0) - warmup) // restarts))
        starts = [warmup + period * k for k in range(restarts)]
        return f"{head}: cycles of {period} steps starting at steps {', '.join(map(str, starts))}."
    if name in ("cosine", "warmup_linear"):
        return f"{head}: decays to step {total if total is not None else '(no end)'}."
    return f"{head}."


def run_plan(cfg: DictConfig, overrides: list[str] | None = None) -> str:
    """Prepare the data, apply the plugin's adjustments, return the plan (several lines)."""
    plugin = registry.get(OmegaConf.select(cfg, "model.name"))
    validate(cfg, plugin)
    acc = accelerator(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        data = load_data(cfg, plugin, Path(tmp), acc, save_report=False)
    changes = adjust_to_data(cfg, plugin, data)
    _, loader = build_loader(cfg, data.train, acc)
    accum = max(1, int(cfg.trainer.accumulate_grad_batches))
    spe = max(1, len(loader) // accum)
    total = _steps(cfg, spe)
    batch = int(cfg.dataset.batch_size)
    every = int(cfg.trainer.every_n_train_steps)
    lines = [length_line(cfg, len(data.train), spe, list(overrides or [])),
             f"Batches: {batch * accum} examples per optimizer step"
             + (f" in {accum} chunks of {batch} (dataset.batch_size={batch}, trainer.accumulate_grad_batches={accum})"
                if accum > 1 else f" (dataset.batch_size={batch})") + f"; {spe} steps per epoch.",
             schedule_line(cfg, spe, total)]
    if total is not None and every > 0:
        saves = total // every
        lines.append(f"Checkpoints and adapters every {every} steps ({saves} during the run, and at the end).")
    if data.val is not None:
        v = val_every(cfg)
        lines.append(f"Validation on {len(data.val)} held-out examples every {v} steps." if v > 0 else
                     f"Validation on {len(data.val)} held-out examples at the start and the end.")
    else:
        lines.append("No validation (val_data=PATH or dataset.val_fraction=0.1 adds it).")
    if changes:
        lines.append("Adjusted to the data: " + "; ".join(changes) + ".")
    epochs = total / spe if total is not None else math.inf
    lines.append(f"Plan only (mode=plan): nothing was trained. About {epochs:,.1f} epochs; run without mode=plan "
                 f"to train." if total is not None else "Plan only (mode=plan): nothing was trained.")
    return "\n".join(lines)
