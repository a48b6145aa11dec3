"""Lightning callbacks: progress bar, MLflow metrics, adapter saving, audio samples, the periodic base of the
evaluations (``fixed_noise_loss``, ``evaluate``) and step checkpoints."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint


class StepProgress(L.Callback):
    """One tqdm bar over optimizer steps: loss, lr, it/s and ETA."""

    def __init__(self, total: int):
        self.total = total
        self.bar = None

    def on_train_start(self, trainer, pl_module):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total, initial=trainer.global_step, desc="train", unit="step",
                        dynamic_ncols=True, smoothing=0.1)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.bar is None:
            return
        done = trainer.global_step - self.bar.n
        m = getattr(pl_module, "step_metrics", {})
        post = {}
        if "train/loss" in m:
            post["loss"] = f"{m['train/loss']:.4f}"
        if trainer.optimizers:
            post["lr"] = f"{trainer.optimizers[0].param_groups[0]['lr']:.2e}"
        self.bar.set_postfix(post, refresh=False)
        if done > 0:
            self.bar.update(done)

    def on_train_end(self, trainer, pl_module):
        if self.bar is not None:
            self.bar.close()

    def on_exception(self, trainer, pl_module, exception):
        self.on_train_end(trainer, pl_module)  # the error's line is then not drawn over


class MetricsToTracker(L.Callback):
    """Per optimizer step: every ``train/*`` metric, lr, grad_norm and it/s to MLflow."""

    def __init__(self, tracker: Any):
        self.tracker = tracker
        self._t = None
        self._grad_norm: float | None = None
        self.history: list[dict[str, float]] = []

    def on_train_start(self, trainer, pl_module):
        self._t = time.perf_counter()
        self._last_step = trainer.global_step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        reuse = getattr(pl_module, "norm_from_clipping", None)
        if reuse is not None and reuse():  # the clipping right after this hook measures it (TrainModule)
            self._grad_norm = None
            return
        measured = getattr(pl_module, "step_grad_norm", None)
        if measured is not None:  # the step's finiteness check measured it (TrainModule, nonfinite.py)
            self._grad_norm = float(measured)
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads:
            norms = torch._foreach_norm(grads)
            self._grad_norm = float(torch.linalg.vector_norm(torch.stack([n.float() for n in norms])))
        else:
            self._grad_norm = 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step == self._last_step:
            return  # still accumulating
        now = time.perf_counter()
        metrics = pl_module.pop_step_metrics()
        metrics["train/lr"] = trainer.optimizers[0].param_groups[0]["lr"]
        if getattr(pl_module, "clip_grad_norm", None) is not None:
            self._grad_norm = float(pl_module.clip_grad_norm)
        engine = getattr(trainer.strategy, "deepspeed_engine", None)
        if engine is not None:  # under ZeRO the gradients live in DeepSpeed's buffers, not p.grad
            norm = engine.get_global_grad_norm()
            self._grad_norm = float(norm) if norm is not None else self._grad_norm
        if getattr(pl_module, "step_nonfinite", False):  # skipped: no optimizer step measured a norm
            self._grad_norm = None
        if self._grad_norm is not None:
            metrics["train/grad_norm"] = self._grad_norm
        # a skipped step's NaN/Inf loss is not a point of the curves (train/nonfinite_steps counts it)
        metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}
        metrics["train/it_per_s"] = (step - self._last_step) / max(now - self._t, 1e-9)
        self._t, self._last_step = now, step
        self.history.append({"step": step, **metrics})
        if self.tracker is not None:
            self.tracker.log_metrics(metrics, step)


class AdapterSaver(L.Callback):
    """Adapters every ``every`` optimizer steps and at the end, in every format the run asks for."""

    def __init__(self, every: int, save: Callable[[Path, int], None], root: Path, tracker: Any, keep: int = 0):
        self.every, self.save, self.root, self.tracker = every, save, Path(root), tracker
        self.keep = int(keep)  # trainer.keep_last_adapters: the newest step_N folders kept (0: every one)
        self.saved: list[Path] = []

    def _prune(self) -> None:
        """Remove all but the newest ``keep`` ``step_N`` folders (by N; ``final`` and manual saves stay)."""
        if self.keep <= 0:
            return
        import shutil

        steps = sorted((int(p.name[5:]), p) for p in self.root.glob("step_*") if p.name[5:].isdigit())
        for _, old in steps[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    def _save(self, name: str, step: int) -> Path:
        out = self.root / name
        self.save(out, step)  # complete or not at all (model_setup.adapter_writer writes it with atomic_dir)
        self.saved.append(out)
        if self.tracker is not None:
            from audiotrain.atomic_write import disk_full_guard

            with disk_full_guard(f"the MLflow run's copy of {out}", kept=f"the adapter {out} is saved",
                                 fix="free some space on the disk of the tracking store, then resume with resume=auto"):
                self.tracker.log_artifact(out, f"adapters/{name}")
        return out

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if getattr(pl_module, "step_nonfinite", False):
            return  # a skipped step saves nothing: the adapters from before a diverging streak stay the newest
        if self.every > 0 and step > 0 and step % self.every == 0 and getattr(self, "_last", -1) != step:
            self._last = step
            self._save(f"step_{step}", step)
            self._prune()

    def on_train_end(self, trainer, pl_module):
        self._save("final", trainer.global_step)


class SampleRenderer(L.Callback):
    """Fixed prompts rendered every ``every`` steps (and at step 0): wav + spectrogram png per prompt."""

    def __init__(self, every: int, render: Callable[[int, Path], list[Path]], root: Path, tracker: Any):
        self.every, self.render, self.root, self.tracker = every, render, Path(root), tracker
        self._done: set[int] = set()

    def _maybe(self, trainer, pl_module, step: int) -> None:
        if self.every <= 0 or step % self.every or step in self._done or trainer.global_rank != 0:
            return
        self._done.add(step)
        out = self.root / f"step_{step}"
        was_training = pl_module.training
        pl_module.eval()
        try:
            files = self.render(step, out)
        finally:
            pl_module.train(was_training)
        if self.tracker is not None:
            for f in files:
                where = "samples/targets" if f.parent.name == "targets" else f"samples/step_{step}"
                self.tracker.log_artifact(f, where)

    def on_train_start(self, trainer, pl_module):
        self._maybe(trainer, pl_module, trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._maybe(trainer, pl_module, trainer.global_step)


class Periodic(L.Callback):
    """Calls ``_run`` at the start, every ``every`` optimizer steps (0: never in between) and at the end."""

    every: int = 0

    def _run(self, trainer, pl_module) -> None:  # overridden by subclasses
        return None

    def on_train_start(self, trainer, pl_module):
        self._run(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if self.every > 0 and step > 0 and step % self.every == 0:
            self._run(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        self._run(trainer, pl_module)


class StepCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, whose per-step checks (~25 us) run only on the steps that can save."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        every = self._every_n_train_steps
        if self._train_time_interval is None and (every < 1 or trainer.global_step % every != 0):
            return  # what ModelCheckpoint itself concludes on such a step, without its other checks
        if getattr(pl_module, "step_nonfinite", False):
            return  # a skipped step saves nothing: the checkpoints from before a diverging streak are kept
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


# Lightning keys a callback's state in checkpoints by its class name: the same key as ModelCheckpoint's, so
# checkpoints written with either resume the other's state (last and best paths, kept files).
StepCheckpoint.__qualname__ = ModelCheckpoint.__qualname__
