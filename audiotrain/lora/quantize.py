"""``model.quantize=nf4|int8``: the frozen base of a LoRA run held in 4-bit NF4 or 8-bit weights (QLoRA).

Every linear layer of the adapter root — ``nn.Linear`` and GPT-2's ``Conv1D`` (its ``(in, out)`` weight turned to
a linear layer's ``(out, in)``) — is replaced by bitsandbytes' ``Linear4bit`` (NF4 with double quantisation,
computing in the run's precision) or ``Linear8bitLt`` (int8 weights, no fp16 copy kept). The LoRA layers PEFT
then injects are its bitsandbytes-aware ones (the root says ``is_loaded_in_4bit`` / ``is_loaded_in_8bit``), and
the adapter they train has the same names and shapes as an unquantised run's: it loads, merges and generates
on the unquantised model like any other (``audiotrain merge`` and ``generate`` build the base unquantised).
Embeddings, convolutions and norms keep their precision, and so (NF4) does a
linear layer whose inputs are not a multiple of NF4's block of 64. A full fine-tune cannot train quantised weights.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from audiotrain.errors import UserError

MODES = ("nf4", "int8")
BLOCK = 64  # NF4's block of inputs


def check(mode: Any, lora_on: bool) -> str | None:
    """The problem with ``model.quantize`` (one sentence), or None."""
    if mode is None:
        return None
    if str(mode) not in MODES:
        return (f"model.quantize={mode} is not a quantisation: use nf4 (4-bit NormalFloat, QLoRA's), int8, or "
                f"null (the base in the run's precision).")
    if not lora_on:
        return (f"model.quantize={mode} holds the frozen base in {mode}, but lora=none trains every weight: use a "
                f"LoRA (lora.r=16) with it, or drop model.quantize.")
    return None


def compute_dtype(precision: str) -> torch.dtype:
    """What the quantised layers compute in: the run's mixed precision, else float32."""
    return {"bf16-mixed": torch.bfloat16, "bf16-true": torch.bfloat16, "16-mixed": torch.float16,
            "16-true": torch.float16}.get(str(precision), torch.float32)


def _linear_weight(mod: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """A linear layer's ``(out, in)`` weight and bias; None for anything else."""
    from transformers.pytorch_utils import Conv1D

    if isinstance(mod, nn.Linear):
        return mod.weight.data, None if mod.bias is None else mod.bias.data
    if isinstance(mod, Conv1D):
        return mod.weight.data.t().contiguous(), None if mod.bias is None else mod.bias.data
    return None


def _quantised(weight: torch.Tensor, bias: torch.Tensor | None, mode: str, dtype: torch.dtype) -> nn.Module:
    import bitsandbytes as bnb

    out_f, in_f = weight.shape
    device = weight.device
    if mode == "nf4":
        q = bnb.nn.Linear4bit(in_f, out_f, bias=bias is not None, compute_dtype=dtype, quant_type="nf4",
                              compress_statistics=True, device="meta")
        q.weight = bnb.nn.Params4bit(weight.float().cpu(), requires_grad=False, quant_type="nf4",
                                     compress_statistics=True)
        # bitsandbytes repacks the weight for an AVX-512 inference kernel the first time it runs without grad on
        # a CPU, and its training path then fails on the repacked weight: validation between steps would end the
        # run, so the layer keeps the one layout
        q.support_avx512bf16_for_cpu = False
    else:
        q = bnb.nn.Linear8bitLt(in_f, out_f, bias=bias is not None, has_fp16_weights=False, device="meta")
        q.weight = bnb.nn.Int8Params(weight.float().cpu(), requires_grad=False, has_fp16_weights=False)
    if bias is not None:
        q.bias = nn.Parameter(bias.detach().float().cpu(), requires_grad=False)
    return q.to(device if device.type != "meta" else "cpu")


def quantize_base(root: nn.Module, mode: str, dtype: torch.dtype = torch.float32) -> int:
    """Replace every linear layer under ``root`` in place (see the module doc); returns the parameters now held
    quantised. Call before LoRA is attached."""
    if mode not in MODES:
        raise UserError(check(mode, True) or f"model.quantize={mode} is unknown.")
    swaps = []
    for name, mod in root.named_modules():
        found = _linear_weight(mod)
        # NF4 quantises rows in blocks of 64 inputs: a layer with fewer (or a ragged last block) stays as it is
        if found is not None and found[0].device.type != "meta" and (mode != "nf4" or found[0].shape[1] % BLOCK == 0):
            swaps.append((name, found))
    count = 0
    for name, (weight, bias) in swaps:
        parent_name, _, leaf = name.rpartition(".")
        parent = root.get_submodule(parent_name) if parent_name else root
        setattr(parent, leaf, _quantised(weight, bias, mode, dtype))
        count += weight.numel()
    if mode == "nf4":
        root.is_loaded_in_4bit = True
    else:
        root.is_loaded_in_8bit = True
    return count


def input_dtype(module: nn.Module) -> torch.dtype:
    """The dtype to feed a (possibly quantised) linear layer: its weight's when that is floating point, a 4-bit
    layer's compute dtype, else float32 (an int8 layer takes float input). A weight held in bf16 by
    ``model.frozen_dtype`` takes float32, as it did before (``audiotrain.lora.frozen_dtype``: autocast or the layer
    itself casts it)."""
    from audiotrain.lora.frozen_dtype import HELD

    weight = getattr(module, "weight", None)
    if module.__dict__.get(HELD):
        return torch.float32
    if weight is not None and weight.is_floating_point():
        return weight.dtype
    dtype = getattr(module, "compute_dtype", None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32
