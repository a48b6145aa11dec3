"""ACE-Step's adapter file: ``pytorch_lora_weights.safetensors`` (diffusers layout, PEFT keys, no prefix).

ACE-Step's pipeline loads this file by path (diffusers ``load_lora_adapter(file, prefix=None)``), which with the
diffusers it ships ignores any config: it rebuilds the LoRA with alpha = r and no rsLoRA, i.e. scale 1. So the
file holds ``lora_B × scale`` (alpha/r, or alpha/√r with rsLoRA) and its config — ``lora_adapter_metadata`` in
the header, where newer diffusers read it, and ``adapter_config.json`` beside it — says alpha = r, no rsLoRA:
both diffusers play the adapter at the strength it was trained at (``lora_weight=1``). The real config and the
scale folded in are kept under ``audiotrain_lora`` in the header, and audiotrain reads the file back to the
adapter it saved (bit for bit when the scale is a power of two; see ``audiotrain.lora.native_format``).

A file from ACE-Step's own trainer (plain PEFT keys) reads as the pipeline reads it: with its
``lora_adapter_metadata`` when it has one, else rank from the shapes and alpha = r.
"""
from __future__ import annotations

from audiotrain.lora.adapter import LoRASettings
from audiotrain.lora.native_format import NativeFormat, settings_from_shapes

FILENAME = "pytorch_lora_weights.safetensors"

FORMAT = NativeFormat(
    filename=FILENAME, expected=f"an ACE-Step LoRA folder or its {FILENAME}",
    metadata_key="lora_adapter_metadata", encode=LoRASettings.to_json, decode=LoRASettings.from_json,
    sidecar="adapter_config.json", sidecar_extra={"peft_type": "LORA"}, infer=settings_from_shapes,
    fold_scale=True, fold_key="audiotrain_lora")
save, load = FORMAT.save, FORMAT.load
