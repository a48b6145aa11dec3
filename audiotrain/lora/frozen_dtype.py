"""``model.frozen_dtype=auto|fp32|bf16``: the frozen base of a ``bf16-mixed`` LoRA run held in bfloat16.

Under ``precision=bf16-mixed`` Lightning runs the step inside ``torch.autocast(dtype=bfloat16)``, which casts the
weight of every linear and convolution (and of ``matmul``/``addmm``) to bf16 before computing. Holding the frozen
weight of such a layer in bf16 from the start therefore changes no number of the step (the cast rounds an fp32
value to bf16 the same way once or every step) and halves its bytes: most of a LoRA run's memory
(docs/memory.md: ACE-Step v1-3.5B 10.8 GB of fp32 frozen weights).

What is held in bf16: the ``weight`` of every frozen ``nn.Linear``, ``nn.Conv*d`` / ``nn.ConvTranspose*d`` and
transformers' GPT-2 ``Conv1D`` (fp32 only: a bitsandbytes layer's quantised weight is left as it is). What stays
fp32, and why:

- LoRA and every other trainable parameter (the optimizer updates them in fp32; adapters are saved from them);
- norms, embeddings, biases and positional tables: autocast does NOT cast them (element-wise ops, lookups), so in
  bf16 they would change the step's numbers, and they are a few percent of the bytes at most;
- a weight another module also holds (tied weights, e.g. an embedding shared with an output head), a
  parametrised weight, and the ``out_proj`` of ``nn.MultiheadAttention`` (read by its parent, not its forward).

Outside autocast (fixed-noise losses, training-time samples, in-process evaluation) a held layer computes with its
weight cast to its input's dtype for that call (a forward pre-hook; one layer's copy at a time), so every forward
works in the precision it was asked for. ``held_in_fp32`` gives a whole-model save (TorToiSe's ``_gpt.pth``) the
fp32 weights users expect: the bf16 values widened exactly, the LoRA merged in fp32.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn

MODES = ("auto", "fp32", "bf16")
ATTR = "frozen_held_dtype"  # set on the backbone: the dtype its frozen matrices are held in (absent: fp32)
HELD = "_frozen_held"  # in a held layer's __dict__ (copied by deepcopy)


def check(mode: Any, lora_on: bool, precision: str, backend: str) -> str | None:
    """The problem with ``model.frozen_dtype`` (one sentence), or None."""
    if str(mode) not in MODES:
        return (f"model.frozen_dtype={mode} is not a choice: use auto (bf16 for a bf16-mixed LoRA run), fp32 or "
                f"bf16.")
    if str(mode) != "bf16":
        return None
    if not lora_on:
        return ("model.frozen_dtype=bf16 holds the frozen base in bf16, but lora=none trains every weight: use a "
                "LoRA (lora.r=16) with it, or model.frozen_dtype=auto.")
    if precision != "bf16-mixed":
        return (f"model.frozen_dtype=bf16 needs precision=bf16-mixed (its autocast computes those weights in bf16 "
                f"anyway), not precision={precision}: set precision=bf16-mixed or model.frozen_dtype=auto.")
    if backend == "deepspeed":
        return ("model.frozen_dtype=bf16 cannot be combined with backend=deepspeed, which casts the whole model "
                "itself: use model.frozen_dtype=auto.")
    return None


def resolve(cfg: Any) -> torch.dtype | None:
    """bfloat16 when this run holds its frozen base in bf16 (``auto``: a LoRA run at ``bf16-mixed`` outside
    DeepSpeed), else None (fp32)."""
    from omegaconf import OmegaConf

    mode = str(OmegaConf.select(cfg, "model.frozen_dtype", default="auto") or "auto")
    lora_on = bool(OmegaConf.select(cfg, "lora.enabled", default=True))
    precision = str(OmegaConf.select(cfg, "precision.name", default="32"))
    backend = str(OmegaConf.select(cfg, "backend.name", default="local"))
    if mode == "bf16" or (mode == "auto" and lora_on and precision == "bf16-mixed" and backend != "deepspeed"):
        return torch.bfloat16
    return None


def _kinds() -> tuple[type, ...]:
    from transformers.pytorch_utils import Conv1D

    return (nn.Linear, nn.modules.conv._ConvNd, Conv1D)


def candidates(root: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of the layers whose frozen fp32 weight may be held in bf16 (see the module doc)."""
    from torch.nn.utils import parametrize

    kinds = _kinds()
    holders: dict[int, int] = {}
    for mod in root.modules():
        for p in mod._parameters.values():
            if p is not None:
                holders[id(p)] = holders.get(id(p), 0) + 1
    skip: set[int] = set()
    for mod in root.modules():
        if isinstance(mod, nn.MultiheadAttention):
            skip.add(id(mod.out_proj))
    out = []
    for name, mod in root.named_modules():
        w = mod._parameters.get("weight") if isinstance(mod, kinds) else None
        if (w is None or w.requires_grad or w.dtype != torch.float32 or w.device.type == "meta" or id(mod) in skip
                or holders.get(id(w), 0) != 1 or parametrize.is_parametrized(mod)
                or any(part.startswith("lora_") for part in name.split("."))):
            continue
        out.append((name, mod))
    return out


def _upcast_pre(mod: nn.Module, args: tuple) -> None:
    """Outside autocast: this call computes with the weight in its input's dtype (restored by ``_restore``)."""
    x = args[0] if args else None
    w = mod._parameters.get("weight")
    if (not isinstance(x, torch.Tensor) or not x.is_floating_point() or w is None or w.dtype == x.dtype
            or torch.is_autocast_enabled(x.device.type)):
        return
    mod.__dict__["_held_weight"] = w
    mod._parameters["weight"] = w.detach().to(x.dtype)


def _restore(mod: nn.Module, args: tuple, output: Any) -> None:
    w = mod.__dict__.pop("_held_weight", None)
    if w is not None:
        mod._parameters["weight"] = w


def hold(backbone: nn.Module, dtype: torch.dtype = torch.bfloat16) -> int:
    """Hold the frozen weight matrices under ``backbone.adapter_root()`` in ``dtype``, in place (call once the
    trainable parameters are final: after LoRA, ``model.init_from`` and ``model.freeze``). Returns how many
    parameters are now held in ``dtype``."""
    root = backbone.adapter_root() if hasattr(backbone, "adapter_root") else backbone
    count = 0
    with torch.no_grad():
        for _, mod in candidates(root):
            w = mod._parameters["weight"]
            w.data = w.data.to(dtype)
            mod.__dict__[HELD] = True
            mod.register_forward_pre_hook(_upcast_pre)
            mod.register_forward_hook(_restore, always_call=True)
            count += w.numel()
    if count:
        setattr(backbone, ATTR, dtype)
    return count


def held_dtype(module: nn.Module) -> torch.dtype | None:
    """The dtype ``hold`` put ``module``'s frozen matrices in (None: not held)."""
    return getattr(module, ATTR, None)


@contextmanager
def held_in_fp32(root: nn.Module) -> Iterator[int]:
    """Inside: every frozen matrix held in a half dtype under ``root`` is an fp32 parameter (its values widened
    exactly), so what is saved or merged there is fp32; afterwards the held parameters are put back as they
    were (the same objects). Yields how many parameters were widened."""
    swapped: list[tuple[nn.Module, nn.Parameter]] = []
    try:
        for mod in root.modules():
            w = mod._parameters.get("weight") if mod.__dict__.get(HELD) else None
            if w is not None and w.dtype != torch.float32 and "_held_weight" not in mod.__dict__:
                swapped.append((mod, w))
                mod._parameters["weight"] = nn.Parameter(w.detach().float(), requires_grad=False)
        yield sum(w.numel() for _, w in swapped)
    finally:
        for mod, w in swapped:
            mod._parameters["weight"] = w
