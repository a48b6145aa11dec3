"""What every job settles before it reads data: the plugin, the config check, the checkpoint it continues
from, its run directory, this process's rank, the seed, the device and precision. ``train`` and ``mode=eval``
both start here."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from audiotrain.config.validate import lightning_precision, validate
from audiotrain.plugins import registry
from audiotrain.train import run_dir as rd
from audiotrain.train import sweep_job
from audiotrain.train.console import console, quiet_libraries


@dataclass
class Job:
    plugin: Any
    ckpt: Path | None          # the checkpoint this job continues from (train) or evaluates (eval)
    run_dir: Path
    accelerator: str           # cpu | gpu
    precision: str             # Lightning's name (32-true, bf16-mixed, 16-mixed, ...)
    rank: int
    sweep: "sweep_job.SweepJob | None"

    @property
    def zero(self) -> bool:
        return self.rank == 0


def start_job(cfg: DictConfig, mode: str = "train") -> Job:
    """Check the config (every problem at once), find the checkpoint, make the run directory, seed everything.

    ``train`` continues a checkpoint in the run directory that wrote it; ``eval`` writes into its own."""
    import lightning as L

    from audiotrain.train.backend import accelerator

    quiet_libraries()
    plugin = registry.get(OmegaConf.select(cfg, "model.name"))
    validate(cfg, plugin, module_names=plugin.lora_module_names(cfg) if cfg.lora.get("target_modules") else None)
    job = sweep_job.current() if mode == "train" else None
    if job is not None and job.n_parallel > 1:
        torch.set_num_threads(sweep_job.threads_per_job(job))
    ckpt = resolve_resume(cfg, job)
    rank = launch_rank(cfg) if mode == "train" else 0
    console.quiet = rank != 0  # the other DDP ranks run the same job silently (rank 0 reports)
    own = Path(str(cfg.paths.run_dir)).resolve()
    run_dir = rd.run_dir_of_checkpoint(ckpt) if ckpt and mode == "train" else own
    run_dir.mkdir(parents=True, exist_ok=True)
    if job is not None:
        console.print(f"[bold]Sweep job {job.num}[/] ({job.label()}): run directory {run_dir}")
    if ckpt and mode == "train":
        console.print(f"Resuming from {ckpt} (run directory {run_dir}).")
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    acc = accelerator(cfg)
    prec = lightning_precision(cfg.precision.name)
    if mode == "train":
        console.print(f"Device: {acc}, precision {prec}, backend {cfg.backend.name}")
        if prec == "16-mixed" and acc == "cpu":
            console.print("[yellow]precision=16-mixed on a CPU runs as bf16 (no fp16 loss scaling happens on a CPU).[/]")
    return Job(plugin, ckpt, run_dir, acc, prec, rank, job)


def resolve_resume(cfg: DictConfig, job: "sweep_job.SweepJob | None" = None) -> Path | None:
    """The checkpoint this job continues from (or evaluates), read once as data and checked to be a complete
    checkpoint of this run's plugin, preset and adapter (:mod:`checkpoint_check`) before anything heavy starts."""
    from audiotrain.train.checkpoint_check import newest_good, read_checkpoint

    if cfg.get("ckpt_path"):
        path = Path(str(cfg.ckpt_path)).expanduser().resolve()
        read_checkpoint(path, cfg)
        return path
    if job is not None:  # a sweep job continues only from its own directory (never another job's checkpoint)
        return newest_good(rd.checkpoints_in([Path(str(cfg.paths.run_dir)).resolve() / "checkpoints"]), cfg,
                           f"sweep job {job.num}")
    if cfg.get("resume") == "auto":
        found = newest_good(rd.all_checkpoints(cfg.paths.log_dir, cfg.exp_name), cfg, "resume=auto")
        if found is None:
            console.print(f"[yellow]resume=auto: no checkpoint yet for exp_name={cfg.exp_name}; starting fresh.[/]")
        return found
    return None


def launch_rank(cfg: DictConfig) -> int:
    """This process's global rank, known before Lightning sets up the process group. With backend=ddp,
    Lightning re-runs the command for ranks 1..N-1 when ``fit`` starts (LOCAL_RANK/NODE_RANK set, the same
    Hydra run dir); torchrun and SLURM set RANK / SLURM_PROCID. Only rank 0 writes the run's files, owns the
    MLflow run, prints the report and the progress bar and saves adapters."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    if "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return int(os.environ["SLURM_PROCID"])
    return int(os.environ.get("NODE_RANK", 0)) * int(cfg.trainer.devices) + int(os.environ.get("LOCAL_RANK", 0))
