"""fp16 loss-scale floor guard, for every plugin and backend.

With fp16 a dynamic loss scale that keeps falling means the gradients keep overflowing: the run is
diverging and the steps it still takes are mostly skipped. :class:`LossScaleGuard` reads the scale after
every optimizer step (Lightning's ``GradScaler`` or DeepSpeed's fp16 optimizer), logs ``train/loss_scale``,
warns once when it drops below ``floor`` and, if it stays below for ``patience`` consecutive optimizer
steps, saves a checkpoint and stops the run with one sentence saying why.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch

from audiotrain.train.deepspeed_cpu import current_loss_scale


def read_loss_scale(trainer: Any) -> float | None:
    """The current fp16 loss scale, or None when nothing scales losses (fp32, bf16, a CPU)."""
    strategy = getattr(trainer, "strategy", None)
    engine = getattr(strategy, "deepspeed_engine", None)
    scale = current_loss_scale(engine)
    if scale is not None:
        return scale
    plugin = getattr(strategy, "precision_plugin", None)
    scaler = getattr(plugin, "scaler", None)
    if scaler is None or not hasattr(scaler, "get_scale"):
        return None
    if hasattr(scaler, "is_enabled") and not scaler.is_enabled():
        return None
    value = scaler.get_scale()
    return float(value.item() if isinstance(value, torch.Tensor) else value)


class LossScaleGuard(L.Callback):
    """Warn when the fp16 loss scale falls below ``floor``; checkpoint and stop after ``patience`` steps there."""

    def __init__(self, floor: float = 16384, patience: int = 50, checkpoint_dir: str | Path | None = None,
                 tracker: Any = None, notify: Callable[[str], None] | None = None):
        if patience < 1:
            raise ValueError(f"loss_scale_patience={patience} must be a positive number of optimizer steps.")
        self.floor = float(floor)
        self.patience = int(patience)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.tracker = tracker
        self.notify = notify
        self.below = 0  # consecutive optimizer steps below the floor
        self.warned = False
        self.stopped_at: int | None = None
        self.checkpoint_path: Path | None = None
        self.messages: list[str] = []
        self.history: list[tuple[int, float]] = []
        self._last_step: int | None = None

    def _say(self, msg: str) -> None:
        self.messages.append(msg)
        if self.notify is not None:
            self.notify(msg)
        else:
            warnings.warn(msg, RuntimeWarning, stacklevel=2)

    def on_train_start(self, trainer, pl_module):
        self._last_step = int(trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = int(trainer.global_step)
        if self._last_step is not None and step == self._last_step:
            return  # still accumulating: no optimizer step yet
        self._last_step = step
        scale = read_loss_scale(trainer)
        if scale is None:
            return
        self.history.append((step, scale))
        metrics = getattr(trainer, "callback_metrics", None)
        if isinstance(metrics, dict):
            metrics["train/loss_scale"] = torch.tensor(scale)
        if self.tracker is not None and getattr(trainer, "is_global_zero", True):
            self.tracker.log_metrics({"train/loss_scale": scale}, step)
        if scale >= self.floor:
            self.below = 0
            return
        self.below += 1
        if not self.warned:
            self.warned = True
            self._say(f"The fp16 loss scale fell to {scale:g} at step {step}, below {self.floor:g}: gradients keep "
                      f"overflowing; the run stops if it stays there for {self.patience} optimizer steps.")
        if self.below >= self.patience and self.stopped_at is None:
            folder = self.checkpoint_dir or Path(str(trainer.default_root_dir)) / "checkpoints"
            path = folder / f"loss-scale-step={step}.ckpt"
            folder.mkdir(parents=True, exist_ok=True)
            trainer.save_checkpoint(str(path))
            trainer.should_stop = True
            self.stopped_at, self.checkpoint_path = step, path
            self._say(f"Stopped at step {step}: the fp16 loss scale stayed below {self.floor:g} for {self.patience} "
                      f"optimizer steps (now {scale:g}), so training was diverging; saved {path} — resume from it "
                      f"with precision=bf16-mixed, a lower optimizer.lr or trainer.gradient_clip_val.")
