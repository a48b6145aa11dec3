"""Trainer backends: local (one process / Lightning auto), DDP (NCCL on GPU, gloo on CPU), DeepSpeed."""
from __future__ import annotations

import contextlib
from typing import Any

import torch
from lightning.pytorch.profilers import PassThroughProfiler

from audiotrain.errors import UserError


class BackendError(UserError):
    pass


def accelerator(cfg: Any) -> str:
    acc = str(cfg.trainer.accelerator)
    if acc == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if acc == "gpu" and not torch.cuda.is_available():
        raise BackendError("trainer.accelerator=gpu but no CUDA GPU is visible: use trainer.accelerator=cpu or auto.")
    return acc


def strategy(cfg: Any, acc: str) -> Any:
    name = cfg.backend.name
    if name == "local":
        return "auto"
    if name == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        pg = cfg.backend.get("process_group_backend") or ("nccl" if acc == "gpu" else "gloo")
        return DDPStrategy(process_group_backend=pg, find_unused_parameters=bool(cfg.backend.find_unused_parameters))
    if name == "deepspeed":
        from audiotrain.config.validate import lightning_precision
        from audiotrain.train.deepspeed_cpu import build

        lora = cfg.get("lora")
        # with an adapter, checkpoints hold only the trainable weights (as TrainModule.on_save_checkpoint
        # does for the other backends: DeepSpeed writes the module itself and ignores that hook's state_dict)
        return build(cfg.backend, lightning_precision(cfg.precision.name), acc,
                     batch_size=int(cfg.dataset.batch_size) if cfg.get("dataset") else None,
                     adapter_only=bool(lora is not None and lora.get("enabled", True)))
    raise BackendError(f"backend={name} is unknown: use local, ddp or deepspeed.")



class NoProfiler(PassThroughProfiler):
    """No profiling, at no cost: Lightning wraps every hook call (~50 a step) in ``profiler.profile(name)``, and
    its pass-through profiler builds a generator-based context manager for each; this hands back one shared
    no-op context instead."""

    _null = contextlib.nullcontext()

    def profile(self, action_name: str) -> Any:
        return self._null


def profiler(cfg: Any, run_dir: Any) -> Any:
    """``trainer.profiler``: null (none), simple or advanced (Lightning's, its report in ``<run_dir>/profile``)."""
    from lightning.pytorch.profilers import AdvancedProfiler, SimpleProfiler

    name = cfg.trainer.get("profiler")
    if name == "simple":
        return SimpleProfiler(dirpath=str(run_dir), filename="profile")
    if name == "advanced":
        return AdvancedProfiler(dirpath=str(run_dir), filename="profile")
    return NoProfiler()


def checkpoint_plugins(cfg: Any) -> list[Any]:
    """How checkpoint files are written (straight to disk) and read (as data: ``trust_pickle``), DirectCheckpointIO;
    DeepSpeed writes and reads its own (its folder is checked as data before ``fit``, job_setup)."""
    if cfg.backend.name == "deepspeed":
        return []
    from audiotrain.train.checkpoint_io import DirectCheckpointIO

    return [DirectCheckpointIO(trust_pickle=bool(cfg.get("trust_pickle", False)),
                               option="ckpt_path" if cfg.get("ckpt_path") else None)]
