"""ACE-Step's adapter file: ``pytorch_lora_weights.safetensors`` (diffusers layout, PEFT keys, no prefix).

We also write the LoRA config into the safetensors header (``lora_adapter_metadata``, as newer
diffusers do) and an ``adapter_config.json`` beside it, so rank and alpha — and thus the scale —
survive a reload (the released diffusers version stored neither, and reloads used alpha = r).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from audiotrain.lora.adapter import LoRASettings, adapter_file, adapter_state

FILENAME = "pytorch_lora_weights.safetensors"
METADATA_KEY = "lora_adapter_metadata"


def save(root: torch.nn.Module, settings: LoRASettings, directory: Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in adapter_state(root).items()}
    meta = json.dumps(settings.to_json())
    out = directory / FILENAME
    save_file(state, str(out), metadata={"format": "pt", METADATA_KEY: meta})
    (directory / "adapter_config.json").write_text(json.dumps({**settings.to_json(), "peft_type": "LORA"}, indent=2))
    return out


def load(path: Path) -> tuple[LoRASettings, dict[str, torch.Tensor]]:
    """Read the file (or its folder). Without stored metadata, r comes from the shapes and alpha = r."""
    path = adapter_file(path, FILENAME, f"an ACE-Step LoRA folder or its {FILENAME}")
    with safe_open(str(path), framework="pt") as fh:
        meta = (fh.metadata() or {}).get(METADATA_KEY)
        state = {k: fh.get_tensor(k) for k in fh.keys()}
    if meta:
        settings = LoRASettings.from_json(json.loads(meta))
    else:
        side = path.parent / "adapter_config.json"
        if side.is_file():
            settings = LoRASettings.from_json(json.loads(side.read_text()))
        else:
            a = next((v for k, v in state.items() if k.endswith("lora_A.weight")), None)
            r = int(a.shape[0]) if a is not None else 8
            targets = sorted({k.split(".lora_")[0].split(".")[-1] for k in state if ".lora_" in k})
            settings = LoRASettings(r=r, alpha=r, target_modules=targets)
    return settings, state
