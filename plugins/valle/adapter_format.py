"""VALL-E's LoRA export: ``lora.sft`` = {"module": LoRA tensors only, "config": the LoRA dataclass}.

Keys are the original's (``model.layers.{i}.self_attn.q_proj.lora_A`` / ``lora_B``: PEFT's keys without
``.weight``; same shapes, A [rank, in], B [out, rank]). In safetensors the config is a JSON string in the
header metadata; ``lora.pth`` holds the same two entries as a torch dict.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from audiotrain.lora.adapter import LoRASettings, adapter_file, adapter_state

FILENAME = "lora.sft"


def original_config(settings: LoRASettings, name: str = "lora") -> dict:
    return {"name": name, "rank": settings.r, "alpha": settings.alpha, "training": True, "embeddings": False,
            "parametrize": False, "rvq_levels": [], "path": None,
            "dropout": settings.dropout, "target_modules": list(settings.target_modules)}


def to_original_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[: -len(".weight")] if k.endswith(".weight") else k: v for k, v in state.items()}


def save(root: torch.nn.Module, settings: LoRASettings, directory: Path, name: str = "lora") -> Path:
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    module = {k: v.contiguous() for k, v in to_original_keys(adapter_state(root)).items()}
    out = directory / FILENAME
    save_file(module, str(out), metadata={"format": "pt", "config": json.dumps(original_config(settings, name))})
    return out


def load(path: Path) -> tuple[LoRASettings, dict[str, torch.Tensor]]:
    """Read ``lora.sft`` / ``lora.pth`` → (settings, PEFT-keyed state)."""
    path = adapter_file(path, FILENAME, "a VALL-E lora.sft / lora.pth")
    if path.suffix == ".pth":
        data = torch.load(str(path), map_location="cpu", weights_only=True)
        module, config = data.get("module") or data.get("lora"), data.get("config") or {}
    else:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            config = json.loads((fh.metadata() or {}).get("config", "{}"))
            module = {k: fh.get_tensor(k) for k in fh.keys()}
    settings = LoRASettings(r=int(config.get("rank", 128)), alpha=float(config.get("alpha", 128)),
                            dropout=float(config.get("dropout", 0.1)),
                            target_modules=list(config.get("target_modules") or []))
    if not settings.target_modules:
        from audiotrain_valle.ar_nar import LORA_TARGETS

        settings.target_modules = list(LORA_TARGETS)
    return settings, {f"{k}.weight" if not k.endswith(".weight") else k: v for k, v in module.items()}
