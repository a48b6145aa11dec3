"""The Lightning Trainer of a training job (device, strategy, precision, steps, clipping, callbacks), and its
``fit`` with the warnings that say nothing about an audiotrain run kept out of the terminal.

Validation is not Lightning's loop: the ``val/*`` callback (``fixed_noise_loss``) measures the held-out set every
``trainer.val_check_interval`` optimizer steps, so Lightning gets no ``val_check_interval`` of its own."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from audiotrain.train.backend import checkpoint_plugins, profiler, strategy
from audiotrain.train.gc_freeze import long_lived_objects_frozen


def build_trainer(cfg: DictConfig, acc: str, precision: str, callbacks: list, run_dir: Path):
    import lightning as L

    t = cfg.trainer
    return L.Trainer(
        accelerator=acc, devices=int(t.devices), num_nodes=int(t.num_nodes),
        strategy=strategy(cfg, acc), precision=precision,
        max_steps=int(t.max_steps), max_epochs=int(t.max_epochs),
        accumulate_grad_batches=int(t.accumulate_grad_batches),
        gradient_clip_val=t.gradient_clip_val, gradient_clip_algorithm=str(t.gradient_clip_algorithm),
        reload_dataloaders_every_n_epochs=max(1, int(t.reload_dataloaders_every_n_epochs))
        if cfg.dataset.get("order") else int(t.reload_dataloaders_every_n_epochs),
        log_every_n_steps=int(t.log_every_n_steps),
        callbacks=callbacks, logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=str(run_dir), num_sanity_val_steps=0,
        use_distributed_sampler=False, deterministic=False, profiler=profiler(cfg, run_dir),
        plugins=checkpoint_plugins(cfg),
    )


def fit(trainer: Any, module: Any, loader: Any, ckpt: Path | None) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*too few batches.*|.*smaller than the logging interval.*")
        # our sampler state is in the checkpoint (ResumableSampler), so mid-epoch resume is exact
        warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch.*")
        warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
        # TrainModule.configure_gradient_clipping defers to Lightning's default under DeepSpeed (which clips itself)
        warnings.filterwarnings("ignore", message=".*configure_gradient_clipping.*")
        # a NaN/Inf first step is skipped (nonfinite.py) while the scheduler steps: torch's warning says only that
        warnings.filterwarnings("ignore", message=r".*lr_scheduler\.step\(\)` before `optimizer\.step\(\)`.*")
        with long_lived_objects_frozen():  # no 0.3-0.5 s full-collection stalls inside the loop
            trainer.fit(module, train_dataloaders=loader, ckpt_path=str(ckpt) if ckpt else None)
