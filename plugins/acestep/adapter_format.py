"""ACE-Step's adapter file: ``pytorch_lora_weights.safetensors`` (diffusers layout, PEFT keys, no prefix).

We also write the LoRA config into the safetensors header (``lora_adapter_metadata``, as newer
diffusers do) and an ``adapter_config.json`` beside it, so rank and alpha — and thus the scale —
survive a reload (the released diffusers version stored neither, and reloads used alpha = r).
"""
from __future__ import annotations

from audiotrain.lora.adapter import LoRASettings
from audiotrain.lora.native_format import NativeFormat, settings_from_shapes

FILENAME = "pytorch_lora_weights.safetensors"

FORMAT = NativeFormat(
    filename=FILENAME, expected=f"an ACE-Step LoRA folder or its {FILENAME}",
    metadata_key="lora_adapter_metadata", encode=LoRASettings.to_json, decode=LoRASettings.from_json,
    sidecar="adapter_config.json", sidecar_extra={"peft_type": "LORA"}, infer=settings_from_shapes)
save, load = FORMAT.save, FORMAT.load
