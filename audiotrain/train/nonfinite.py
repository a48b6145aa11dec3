"""Non-finite steps, for every plugin: a NaN/Inf loss or gradient never updates the weights, and a run that keeps
producing them stops with what was good.

How a step is guarded (``TrainModule.optimizer_step`` calls :func:`guarded_step`, Lightning's automatic
optimization): the step's closure (training_step, zero_grad, backward) runs first; then the loss of every
micro-batch of the step (the module's loss window, so gradient accumulation is covered) and the total gradient
norm are checked; the verdict is all-reduced, so under DDP every rank skips the same steps. A bad step never
reaches ``optimizer.step`` (no clipping, no update of the weights or the optimizer state); its gradients are
dropped. Lightning still counts it: ``trainer.global_step``, the LR scheduler and the sampler advance as for any
step, so a skipped step counts toward ``trainer.max_steps`` and a resumed run stays exact.

* fp16 (``GradScaler``): the gradients are still scaled when checked, and overflowing scaled gradients are the
  scaler's business (it skips the step and lowers the scale; ``loss_scale.py`` watches that), so only a
  non-finite *loss* is counted and skipped here: a step is never counted twice.
* DeepSpeed steps inside its engine, whose counters and gradient buffers must see every step: its ZeRO
  optimizers (stages 1-3, and any fp16/bf16 run) find the NaN/Inf gradients themselves and skip the update
  ("OVERFLOW! Skipping step"); at stage 0 in fp32 it steps the plain torch optimizer, whose update is then left out
  of the engine's step. Only a non-finite loss is counted under
  DeepSpeed (its gradients live in its buffers); the stop rule below holds all the same.

:class:`NonFiniteGuard` counts the skipped steps (``train/nonfinite_steps`` in MLflow, a console line each), holds
back periodic saves on skipped steps (so the checkpoints and adapters from before a bad streak are not rotated
away), and after ``trainer.max_nonfinite_steps`` bad steps in a row tags the MLflow run with the reason and
raises :class:`TrainingDiverged` naming the first bad step, the last good checkpoint and adapter, and what to
try. Raising skips Lightning's end of training, so no ``final`` adapter and no new ``last.ckpt`` is written.
"""
from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch

from audiotrain.errors import UserError


# resuming restores the optimizer and scheduler state, so a changed optimizer.lr would not take effect
RESUME_KEEPS_LR = "resume=auto and ckpt_path= continue with the checkpoint's optimizer state, its learning rate included"


class TrainingDiverged(UserError):
    """The loss or gradients stayed NaN/Inf for ``trainer.max_nonfinite_steps`` optimizer steps in a row."""


# ---- the step ---------------------------------------------------------------------------------
def _is_deepspeed(strategy: Any) -> bool:
    return "deepspeed" in type(strategy).__name__.lower()


def _window_loss(module: Any) -> torch.Tensor | None:
    """The sum of this step's micro-batch losses (NaN/Inf when any one of them is)."""
    total = module._window.get("loss", (None, 0))[0]
    return total if isinstance(total, torch.Tensor) else None


def _agree(strategy: Any, bad: bool) -> bool:
    """True on every rank when any rank found the step bad."""
    if getattr(strategy, "world_size", 1) > 1:
        return bool(strategy.reduce_boolean_decision(bad, all=False))
    return bad


def guarded_step(module: Any, optimizer: Any, closure: Callable[[], Any]) -> None:
    """Run the step's closure, then ``optimizer.step`` only when the loss and gradients are finite; sets
    ``module.step_nonfinite`` (this step was bad) and ``module.step_grad_norm`` (the total norm it measured, reused
    by clipping, or None)."""
    trainer = module.trainer
    strategy = trainer.strategy
    module.step_grad_norm = None
    result = closure()  # training_step, zero_grad (first micro-batch of the step), backward
    loss = _window_loss(module)
    if _is_deepspeed(strategy):  # the engine steps (and skips overflowing steps) itself; the loss is watched
        bad = _agree(strategy, loss is not None and not bool(torch.isfinite(loss)))
        module.step_nonfinite = bad
        inner = getattr(getattr(strategy, "deepspeed_engine", None), "optimizer", None)
        if bad and isinstance(inner, torch.optim.Optimizer):
            # ZeRO stage 0 without fp16/bf16 steps the plain torch optimizer, which checks nothing: the engine
            # runs its step (counters, clipping, zero_grad) with that optimizer's update left out
            inner.step = lambda *a, **k: None
            try:
                optimizer.step(closure=lambda: result)
            finally:
                del inner.step
            return
        optimizer.step(closure=lambda: result)
        return
    flag = ~torch.isfinite(loss) if loss is not None else torch.zeros((), dtype=torch.bool)
    scaler = getattr(getattr(trainer, "precision_plugin", None), "scaler", None)
    if scaler is None:  # unscaled gradients: a NaN/Inf value (or an overflowing norm) is a bad step
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads:
            norm = torch.nn.utils.get_total_norm(grads)  # what clip_grad_norm_ measures, in the same way
            module.step_grad_norm = norm
            flag = flag.to(norm.device) | ~torch.isfinite(norm)
    bad = _agree(strategy, bool(flag))
    module.step_nonfinite = bad
    if bad:
        module.step_grad_norm = None
        optimizer.zero_grad(set_to_none=True)
        return
    optimizer.step(closure=lambda: result)


# ---- counting and stopping ---------------------------------------------------------------------
def advice(cfg: Any, precision: str) -> str:
    """What to try after a divergence, with the values this run used."""
    tips = [f"lower optimizer.lr (now {float(cfg.optimizer.lr):g})"]
    if precision.startswith("16"):
        tips.append(f"precision=bf16-mixed or precision=32 (now {cfg.precision.name})")
    elif not precision.startswith("32"):
        tips.append(f"precision=32 (now {cfg.precision.name})")
    clip = cfg.trainer.get("gradient_clip_val")
    tips.append(f"a smaller trainer.gradient_clip_val (now {float(clip):g})" if clip else
                "trainer.gradient_clip_val=1.0 (now off)")
    return ", or ".join(tips)


_STEP = re.compile(r"step[=_](\d+)")


def newest_before(folder: Path, pattern: str, step: int) -> Path | None:
    """The file/folder matching ``pattern`` in ``folder`` whose name's step number is the highest below ``step``."""
    best: tuple[int, Path] | None = None
    for p in folder.glob(pattern) if folder.is_dir() else []:
        m = _STEP.search(p.name)
        if m and int(m.group(1)) < step and not p.name.startswith(".") and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), p)
    return best[1] if best else None


class NonFiniteGuard(L.Callback):
    """Counts skipped steps, holds back saves on them, stops the run after ``limit`` in a row (module docstring)."""

    def __init__(self, limit: int, run_dir: str | Path, tracker: Any = None, advice: str = "",
                 every: int | None = None):
        if limit < 1:
            raise ValueError(f"trainer.max_nonfinite_steps={limit} must be a positive number of optimizer steps.")
        self.limit, self.run_dir, self.tracker = int(limit), Path(run_dir), tracker
        self.advice, self.every = advice, every
        self.total = 0          # skipped steps in all (train/nonfinite_steps)
        self.in_a_row = 0
        self.first_bad: int | None = None  # the first step of the current streak
        self.first_loss: float | None = None
        self.messages: list[str] = []
        self._last_step: int | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total, "in_a_row": self.in_a_row, "first_bad": self.first_bad,
                "first_loss": self.first_loss}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.total = int(state_dict.get("total", 0))
        self.in_a_row = int(state_dict.get("in_a_row", 0))
        self.first_bad = state_dict.get("first_bad")
        self.first_loss = state_dict.get("first_loss")

    def on_train_start(self, trainer, pl_module):
        self._last_step = int(trainer.global_step)

    def _say(self, trainer, text: str) -> None:
        self.messages.append(text)
        if trainer.is_global_zero:
            from tqdm.auto import tqdm

            tqdm.write(text, file=sys.stderr)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = int(trainer.global_step)
        if step == self._last_step:
            return  # still accumulating
        self._last_step = step
        if not getattr(pl_module, "step_nonfinite", False):
            self.in_a_row, self.first_bad, self.first_loss = 0, None, None
            return
        self.total += 1
        self.in_a_row += 1
        loss = getattr(pl_module, "step_metrics", {}).get("train/loss")
        if self.in_a_row == 1:
            self.first_bad, self.first_loss = step, loss
        shown = f"loss {loss:g}" if loss is not None else "loss not finite"
        if loss is not None and math.isfinite(loss):
            shown += ", gradients NaN/Inf"
        self._say(trainer, f"[nonfinite] step {step}: {shown}: skipped, the weights and optimizer state are unchanged "
                           f"({self.in_a_row} in a row, {self.total} in all; the run stops at {self.limit} in a row)")
        if self.tracker is not None and trainer.is_global_zero:
            self.tracker.log_metrics({"train/nonfinite_steps": self.total}, step)
        if self.in_a_row >= self.limit:
            msg = self.diverged_message(step)
            if self.tracker is not None and trainer.is_global_zero:
                from audiotrain.tracking.mlflow_store import FAILURE_TAG

                # the reason first in the run's description, the command and bad-input report it had kept below
                before = self.tracker.client.get_run(self.tracker.run_id).data.tags.get("mlflow.note.content", "")
                self.tracker.set_tags({FAILURE_TAG: msg[:5000], "mlflow.note.content": f"{msg}\n\n{before}"[:5000]})
            raise TrainingDiverged(msg)

    def last_good(self) -> tuple[Path | None, Path | None]:
        """The newest checkpoint and adapter written before the first bad step of the current streak."""
        first = self.first_bad if self.first_bad is not None else 1 << 62
        ckpt = newest_before(self.run_dir / "checkpoints", "*step=*.ckpt", first)
        adapter = newest_before(self.run_dir / "adapters", "*step_*", first)
        return ckpt, adapter

    def diverged_message(self, step: int) -> str:
        first = self.first_bad
        loss = f"loss {self.first_loss:g}" if self.first_loss is not None else "a NaN/Inf loss"
        ckpt, adapter = self.last_good()
        if ckpt is None and adapter is None:
            kept = (f"nothing was saved before step {first} (saves come every trainer.every_n_train_steps="
                    f"{self.every} steps)")
        else:
            kept = (f"the last good checkpoint is {ckpt or 'none'} and the last good adapter "
                    f"{adapter or 'none'} (no final adapter was written)")
        return (f"Training diverged: the loss or gradients were NaN/Inf for {self.in_a_row} optimizer steps in a row "
                f"(trainer.max_nonfinite_steps={self.limit}), from step {first} ({loss}) to step {step}; those steps "
                f"were skipped, so the weights are still those of step {first - 1}: {kept}; to try next: "
                f"{self.advice}, in a new run ({RESUME_KEEPS_LR}).")
