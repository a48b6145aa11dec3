"""DeepSpeed through Lightning, on CUDA and on a CPU (gloo).

Lightning's ``DeepSpeedStrategy`` refuses a CPU accelerator. :class:`CPUDeepSpeedStrategy` lifts that with
three overrides (environment set up as DDP does, root device ``cpu:0``, distributed init without the CUDA
device-index check, and without compiling DeepSpeed's inference-only shared-memory op); everything else — ZeRO stages 0-3, a client torch optimizer, checkpoints — is
Lightning's and DeepSpeed's own code.

:func:`ds_config` turns ``conf/backend/deepspeed.yaml`` into the DeepSpeed config dict: ZeRO stage and
offload, and an ``fp16`` section (dynamic loss scale with window / floor / initial power) only for
``16-mixed``, ``bf16`` only for bf16. DeepSpeed has no ceiling on the dynamic loss scale, so the strategy
caps it after every optimizer step (``max_loss_scale``), as VALL-E's engine does.
"""
from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from lightning.pytorch.strategies import DeepSpeedStrategy

ZERO_DEFAULTS = dict(allgather_partitions=True, contiguous_gradients=True, overlap_comm=False,
                     reduce_scatter=True, allgather_bucket_size=int(2e8), reduce_bucket_size=int(2e8))


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    getter = getattr(cfg, "get", None)
    value = getter(key, default) if getter else getattr(cfg, key, default)
    return default if value is None else value


def ds_config(backend: Any, precision: str, batch_size: int | None = None) -> dict[str, Any]:
    """The DeepSpeed config dict for ``backend`` (the ``cfg.backend`` node) and a Lightning precision."""
    stage = int(_get(backend, "stage", 2))
    zero: dict[str, Any] = {"stage": stage}
    if stage > 0:
        zero.update(ZERO_DEFAULTS)
        if stage == 3:
            zero.update(stage3_gather_16bit_weights_on_model_save=True)
    config: dict[str, Any] = {"zero_optimization": zero, "zero_allow_untested_optimizer": True}
    if _get(backend, "offload_optimizer", False):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": False}
        # audiotrain's torch optimizer steps the offloaded states (DeepSpeedCPUAdam would compile ~1 min first)
        config["zero_force_ds_cpu_optimizer"] = False
    if _get(backend, "offload_parameters", False):
        zero["offload_param"] = {"device": "cpu", "pin_memory": False}
    if precision in ("16-mixed", "16-true"):
        config["fp16"] = {
            "enabled": True,
            "loss_scale": 0,  # 0 = dynamic
            "initial_scale_power": int(_get(backend, "initial_scale_power", 16)),
            "loss_scale_window": int(_get(backend, "loss_scale_window", 1000)),
            "hysteresis": int(_get(backend, "hysteresis", 2)),
            "min_loss_scale": float(_get(backend, "min_loss_scale", 1)),
        }
    elif precision in ("bf16-mixed", "bf16-true"):
        config["bf16"] = {"enabled": True}
    if batch_size:
        config["train_micro_batch_size_per_gpu"] = int(batch_size)
    return config


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_rendezvous() -> None:
    """MASTER_ADDR / MASTER_PORT for a single-machine run when the launcher did not set them."""
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if not os.environ.get("MASTER_PORT"):
        os.environ["MASTER_PORT"] = str(free_port())


@contextmanager
def gathered(module: torch.nn.Module) -> Iterator[None]:
    """Full parameters of ``module`` inside the block under ZeRO-3 (partitioned parameters read as empty
    tensors otherwise); a no-op for every other backend and stage. Wrap adapter / weight saving with it."""
    params = [p for p in module.parameters() if hasattr(p, "ds_id")]
    if not params:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        yield


def current_loss_scale(engine: Any) -> float | None:
    """The dynamic fp16 loss scale of a DeepSpeed engine (None when it does not scale losses)."""
    if engine is None:
        return None
    fp16 = getattr(engine, "fp16_enabled", None)
    if callable(fp16) and not fp16():  # fp32 / bf16 engines keep a constant scale of 1
        return None
    opt = getattr(engine, "optimizer", None)
    for obj, attr in ((opt, "cur_scale"), (opt, "loss_scale"), (getattr(opt, "loss_scaler", None), "cur_scale")):
        value = getattr(obj, attr, None) if obj is not None else None
        if isinstance(value, (int, float, torch.Tensor)):
            return float(value)
    return None


def cap_loss_scale(engine: Any, max_scale: float | None) -> None:
    """Keep DeepSpeed's dynamic loss scale at or below ``max_scale``."""
    if not max_scale or engine is None:
        return
    opt = getattr(engine, "optimizer", None)
    scale = current_loss_scale(engine)
    if opt is None or scale is None or scale <= max_scale:
        return
    scaler = getattr(opt, "loss_scaler", None)
    if scaler is not None and hasattr(scaler, "cur_scale"):
        scaler.cur_scale = float(max_scale)
    if hasattr(opt, "cur_scale"):
        opt.cur_scale = float(max_scale)


class CappedDeepSpeedStrategy(DeepSpeedStrategy):
    """Lightning's DeepSpeed strategy plus a ceiling on the fp16 dynamic loss scale."""

    strategy_name = "audiotrain_deepspeed"

    def __init__(self, *args: Any, max_loss_scale: float | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.max_loss_scale = max_loss_scale

    def optimizer_step(self, *args: Any, **kwargs: Any) -> Any:
        out = super().optimizer_step(*args, **kwargs)
        cap_loss_scale(getattr(self, "model", None), self.max_loss_scale)
        return out

    def save_checkpoint(self, checkpoint: dict, filepath: Any, storage_options: Any | None = None) -> None:
        """DeepSpeed's checkpoint folder, written by every rank into a temporary sibling and swapped into place by
        rank 0 once all wrote their part (``atomic_write.publish_dir``): a kill or a full disk mid-save leaves the
        previous folder of that name as it was."""
        from pathlib import Path

        from audiotrain import atomic_write as aw
        from audiotrain.train.checkpoint_io import DISK_FULL_FIX, kept_clause, previous_checkpoint

        target = Path(self.broadcast(str(filepath)))
        tmp = Path(self.broadcast(str(aw.temp_name(target))))  # rank 0's name, for every rank
        if self.is_global_zero:
            target.parent.mkdir(parents=True, exist_ok=True)
            aw.sweep(target.parent)
            aw.recover(target)
        self.barrier("audiotrain_ckpt_start")
        try:
            with aw.disk_full_guard(target, kept=lambda: kept_clause(previous_checkpoint(target)), fix=DISK_FULL_FIX):
                super().save_checkpoint(checkpoint, str(tmp), storage_options)
                self.barrier("audiotrain_ckpt_written")
                if self.is_global_zero:
                    aw.fsync(tmp)
                    aw.publish_dir(tmp, target)
        finally:
            if self.is_global_zero and os.path.lexists(tmp):
                aw.remove(tmp)
        self.barrier("audiotrain_ckpt_done")


class CPUDeepSpeedStrategy(CappedDeepSpeedStrategy):
    """DeepSpeed ZeRO on CPU processes over gloo (Lightning's strategy refuses a CPU accelerator)."""

    strategy_name = "audiotrain_deepspeed_cpu"

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("process_group_backend", "gloo")
        super().__init__(*args, **kwargs)

    def setup_environment(self) -> None:
        # DDP's environment set-up without the "only supported on CUDA GPUs" check
        ensure_rendezvous()
        super(DeepSpeedStrategy, self).setup_environment()

    @property
    def root_device(self) -> torch.device:
        # DeepSpeed compares the device index with 0: a bare torch.device("cpu") has index None
        return torch.device("cpu", self.local_rank)

    def setup_distributed(self) -> None:
        from lightning.fabric.utilities.seed import reset_seed

        reset_seed()
        self.set_world_ranks()
        with _no_shm_comm_op():
            self._init_deepspeed_distributed()


@contextmanager
def _no_shm_comm_op() -> Iterator[None]:
    """Skip compiling DeepSpeed's shared-memory all-reduce op (~80 s on first use). DeepSpeed uses it only
    for ``inference_all_reduce`` and falls back to the gloo all-reduce without it; training never calls it."""
    import importlib

    ds_torch = importlib.import_module("deepspeed.comm.torch")  # "import a.b.torch as x" yields torch itself

    original = ds_torch.build_shm_op
    ds_torch.build_shm_op = lambda: None
    try:
        yield
    finally:
        ds_torch.build_shm_op = original


def build(backend: Any, precision: str, acc: str, batch_size: int | None = None,
          adapter_only: bool = False) -> DeepSpeedStrategy:
    """The strategy ``backend=deepspeed`` uses: the CPU subclass on a CPU, Lightning's own (capped) on GPUs."""
    config = ds_config(backend, precision, batch_size)
    cls = CPUDeepSpeedStrategy if acc == "cpu" else CappedDeepSpeedStrategy
    max_scale = _get(backend, "max_loss_scale", None)
    return cls(config=config, max_loss_scale=float(max_scale) if max_scale else None,
               exclude_frozen_parameters=adapter_only)
