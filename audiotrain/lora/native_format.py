"""A system's own LoRA file, described once per plugin by a :class:`NativeFormat` and written/read here.

The file is one safetensors file (a torch ``.pth`` of the same content is read too): the LoRA tensors under
the original project's names — PEFT's (``<module>.lora_A.weight``) with ``drop_suffix`` dropped — and the
config as JSON under ``metadata_key`` in the header (``encode``/``decode`` translate it). On reading, a file
without that config falls back to the ``sidecar`` JSON beside it, then to ``infer(tensors)``, then to
``decode({})`` (the codec's defaults).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from audiotrain.lora.adapter import LoRAConfigError, LoRASettings, adapter_state, target_suffix

Codec = Callable[[LoRASettings], dict[str, Any]]


@dataclass(frozen=True)
class NativeFormat:
    filename: str
    #: what a user must give, for the error when the file is missing ("a lora.sft / lora.pth export")
    expected: str
    metadata_key: str
    encode: Codec
    decode: Callable[[Mapping[str, Any]], LoRASettings]
    drop_suffix: str = ""
    sidecar: str | None = None
    sidecar_extra: Mapping[str, Any] = field(default_factory=dict)
    infer: Callable[[Mapping[str, torch.Tensor]], LoRASettings] | None = None
    #: keys of a ``.pth`` dict that may hold the tensors, first found wins
    pth_state_keys: tuple[str, ...] = ("module",)

    def to_native(self, key: str) -> str:
        s = self.drop_suffix
        return key[: -len(s)] if s and key.endswith(s) else key

    def to_peft(self, key: str) -> str:
        s = self.drop_suffix
        return key if not s or key.endswith(s) else key + s

    def save(self, root: torch.nn.Module, settings: LoRASettings, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {self.to_native(k): v.contiguous() for k, v in adapter_state(root).items()}
        config = self.encode(settings)
        out = directory / self.filename
        save_file(state, str(out), metadata={"format": "pt", self.metadata_key: json.dumps(config)})
        if self.sidecar:
            (directory / self.sidecar).write_text(json.dumps({**config, **self.sidecar_extra}, indent=2))
        return out

    def load(self, path: str | Path) -> tuple[LoRASettings, dict[str, torch.Tensor]]:
        """Read the file (or its folder) → (settings, PEFT-keyed state)."""
        path = Path(path)
        path = path / self.filename if path.is_dir() else path
        if not path.is_file():
            raise LoRAConfigError(f"{path} does not exist: give {self.expected}.")
        if path.suffix == ".pth":
            data = torch.load(str(path), map_location="cpu", weights_only=True)
            state = next((data[k] for k in self.pth_state_keys if data.get(k)), {})
            config = data.get(self.metadata_key)
            config = json.loads(config) if isinstance(config, str) and config else config
        else:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as fh:
                meta = (fh.metadata() or {}).get(self.metadata_key)
                state = {k: fh.get_tensor(k) for k in fh.keys()}
            config = json.loads(meta) if meta else None
        state = {self.to_peft(k): v for k, v in state.items()}
        side = path.parent / self.sidecar if self.sidecar else None
        if not config and side is not None and side.is_file():
            config = json.loads(side.read_text())
        if not config and self.infer is not None:
            return self.infer(state), state
        return self.decode(config or {}), state


def settings_from_shapes(state: Mapping[str, torch.Tensor]) -> LoRASettings:
    """Settings a bare PEFT-keyed LoRA state implies: r from ``lora_A``'s rows, alpha = r, targets = the
    adapted modules' shortest names (``to_out.0``, not a bare ``0`` that would match every ``*.0``)."""
    a = next((v for k, v in state.items() if k.endswith("lora_A.weight")), None)
    r = int(a.shape[0]) if a is not None else 8
    targets = sorted({target_suffix(k.split(".lora_")[0]) for k in state if ".lora_" in k})
    return LoRASettings(r=r, alpha=r, target_modules=targets)
