"""The whole UnifiedVoice a save writes as ``<step>_gpt.pth``: the model itself for a full fine-tune, a merged
copy for a LoRA run (TorToiSe and AIVC have no adapter format; training goes on with the adapter unmerged)."""
from __future__ import annotations

import copy
from typing import Any

import torch


def merged_model(root: torch.nn.Module, settings: Any) -> torch.nn.Module:
    if settings is None:
        return root
    from audiotrain.lora import adapter as lora

    with torch.no_grad():
        twin = copy.deepcopy(root)
        for p in twin.parameters():
            p.grad = None
        return lora.merge(twin)
