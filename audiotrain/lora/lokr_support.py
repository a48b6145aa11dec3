"""What PEFT's LoKr can adapt, and the one sentence for a ``lora=lokr`` setting it cannot.

PEFT's LoKr wraps ``nn.Linear``, ``nn.Conv1d`` and ``nn.Conv2d`` only (``LoKrModel.layers_mapping``): no
bitsandbytes 4-/8-bit layer (so no ``model.quantize`` / QLoRA), no GPT-2-style ``Conv1D``, no embedding. It has
no rsLoRA scaling (its scale is always alpha / r).
"""
from __future__ import annotations

from typing import Iterable

from torch import nn

SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d)


def _quantised(module: nn.Module) -> bool:
    return type(module).__module__.startswith("bitsandbytes") or hasattr(getattr(module, "weight", None), "quant_state")


def lokr_problem(settings, targeted: Iterable[tuple[str, nn.Module]]) -> str | None:
    """None when PEFT's LoKr can adapt every targeted module with these settings, else one sentence."""
    if settings.use_rslora:
        return "lora=lokr has no rsLoRA scaling (PEFT's LoKr scales by alpha / r): drop lora.use_rslora=true."
    for name, module in targeted:
        if _quantised(module):
            return (f"lora=lokr cannot adapt {name}, a {type(module).__name__} of the quantised base (PEFT's LoKr has "
                    f"no 4-/8-bit layer): drop model.quantize, or use the default lora for QLoRA.")
        if not isinstance(module, SUPPORTED):
            return (f"lora=lokr cannot adapt {name}, a {type(module).__name__} (PEFT's LoKr wraps Linear, Conv1d and "
                    f"Conv2d only): set lora.target_modules to such layers, or use the default lora.")
    return None
