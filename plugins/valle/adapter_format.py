"""VALL-E's LoRA export: ``lora.sft`` = {"module": LoRA tensors only, "config": the LoRA dataclass}.

Keys are the original's (``model.layers.{i}.self_attn.q_proj.lora_A`` / ``lora_B``: PEFT's keys without
``.weight``; same shapes, A [rank, in], B [out, rank]). In safetensors the config is a JSON string in the
header metadata; ``lora.pth`` holds the same two entries as a torch dict (tensors under "module" or "lora").
"""
from __future__ import annotations

from typing import Any, Mapping

from audiotrain.lora.adapter import LoRASettings
from audiotrain.lora.native_format import NativeFormat


def original_config(settings: LoRASettings) -> dict:
    return {"name": "lora", "rank": settings.r, "alpha": settings.alpha, "training": True, "embeddings": False,
            "parametrize": False, "rvq_levels": [], "path": None,
            "dropout": settings.dropout, "target_modules": list(settings.target_modules)}


def from_original(config: Mapping[str, Any]) -> LoRASettings:
    """The original's defaults where the file says nothing (rank = alpha = 128, dropout 0.1, the six linears)."""
    from audiotrain_valle.ar_nar import LORA_TARGETS

    return LoRASettings(r=int(config.get("rank", 128)), alpha=float(config.get("alpha", 128)),
                        dropout=float(config.get("dropout", 0.1)),
                        target_modules=list(config.get("target_modules") or LORA_TARGETS))


FORMAT = NativeFormat(filename="lora.sft", expected="a VALL-E lora.sft / lora.pth", metadata_key="config",
                      encode=original_config, decode=from_original, drop_suffix=".weight",
                      pth_state_keys=("module", "lora"))
save, load = FORMAT.save, FORMAT.load
