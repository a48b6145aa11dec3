"""A system's own LoRA file, described once per plugin by a :class:`NativeFormat` and written/read here.

The file is one safetensors file (a torch ``.pth`` of the same content is read too): the LoRA tensors under
the original project's names — PEFT's (``<module>.lora_A.weight``) with ``drop_suffix`` dropped — and the
config as JSON under ``metadata_key`` in the header (``encode``/``decode`` translate it). On reading, a file
without that config falls back to the ``sidecar`` JSON beside it, then to ``infer(tensors)``, then to
``decode({})`` (the codec's defaults).

``fold_scale``: for an ecosystem whose loader ignores the config (it rebuilds the LoRA with alpha = r and no
rsLoRA, so it plays every adapter at scale 1), the file holds ``lora_B × scale`` and its config says alpha = r,
no rsLoRA — that loader then plays the adapter at the strength it was trained at. The real config and the
scale folded in go under ``fold_key``; reading divides ``lora_B`` by that scale again and returns the real
config. The round trip is bit for bit whenever the scale is a power of two (alpha/r = 2, rsLoRA r=256 alpha=32,
…): multiplying a float by 2^k and dividing again is exact. Any other scale leaves ``lora_B`` within one unit
in the last place (no single float32 tensor can hold both ``B × s`` and every bit of ``B`` for such ``s``).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
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
    #: write lora_B × scale and a config of alpha = r, no rsLoRA (see the module's text); read it back exactly
    fold_scale: bool = False
    #: the header key that holds {"scale_folded_into_lora_B": s, "config": the real config} in a folded file
    fold_key: str = "audiotrain_lora"
    #: the adapters (``LoRASettings.algo``) this file can hold; ``save`` writes nothing (None) for another one
    algos: tuple[str, ...] = ("lora",)

    def to_native(self, key: str) -> str:
        s = self.drop_suffix
        return key[: -len(s)] if s and key.endswith(s) else key

    def to_peft(self, key: str) -> str:
        s = self.drop_suffix
        return key if not s or key.endswith(s) else key + s

    def save(self, root: torch.nn.Module, settings: LoRASettings, directory: str | Path) -> Path | None:
        return self.save_state(adapter_state(root), settings, directory)

    def save_state(self, state: Mapping[str, torch.Tensor], settings: LoRASettings,
                   directory: str | Path) -> Path | None:
        """Write PEFT-keyed LoRA tensors (``adapter_state``'s keys) as this format's file in ``directory``; None
        (nothing written) for an adapter this file cannot hold (a LoKr: the PEFT folder holds it)."""
        from safetensors.torch import save_file

        if settings.algo not in self.algos:
            return None

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        metadata = {"format": "pt"}
        written = settings
        if self.fold_scale:
            scale = float(settings.scale)
            state = {k: v * scale if _is_lora_b(k) else v for k, v in state.items()}
            written = replace(settings, alpha=settings.r, use_rslora=False)
            metadata[self.fold_key] = json.dumps({"scale_folded_into_lora_B": scale, "config": self.encode(settings)})
        state = {self.to_native(k): v.contiguous() for k, v in state.items()}
        config = self.encode(written)
        metadata[self.metadata_key] = json.dumps(config)
        out = directory / self.filename
        save_file(state, str(out), metadata=metadata)
        if self.sidecar:
            (directory / self.sidecar).write_text(json.dumps({**config, **self.sidecar_extra}, indent=2))
        return out

    def load(self, path: str | Path, option: str | None = None,
             trust_pickle: bool = False) -> tuple[LoRASettings, dict[str, torch.Tensor]]:
        """Read the file (or its folder) → (settings, PEFT-keyed state). Read as data: safetensors, or a ``.pth``
        with ``torch.load(weights_only=True)`` (``trust_pickle`` unpickles fully: only for your own files); every
        bad file is one sentence (a UserError)."""
        return self.read(path, option, trust_pickle, fallback=True)  # type: ignore[return-value]

    def read(self, path: str | Path, option: str | None = None, trust_pickle: bool = False,
             fallback: bool = False) -> tuple[LoRASettings | None, dict[str, torch.Tensor]]:
        """:meth:`load`, but settings are None for a file that carries no config (no header entry, no sidecar)
        unless ``fallback`` (then ``infer(tensors)`` or the codec's defaults, as ``load`` gives)."""
        from audiotrain.safe_files import BadFileError, load_safetensors, load_torch, read_json, safetensors_metadata

        path = Path(path).expanduser()
        path = path / self.filename if path.is_dir() else path
        where = f"{option}={path}" if option else str(path)
        if not path.is_file():
            raise LoRAConfigError(f"{where} does not exist: give {self.expected}.")
        if path.suffix == ".pth":
            data = load_torch(path, option=option, expected=self.expected, trust_pickle=trust_pickle)
            if not isinstance(data, Mapping):
                raise BadFileError(f"{where} holds a {type(data).__name__}, not a LoRA export; give {self.expected}.")
            state = next((data[k] for k in self.pth_state_keys if isinstance(data.get(k), Mapping) and data.get(k)), {})
            config = data.get(self.metadata_key)
            config = _config_json(config, where, self.expected) if isinstance(config, str) else config
            folded = data.get(self.fold_key) if self.fold_scale else None
        else:
            header = safetensors_metadata(path, option=option, expected=self.expected)
            state = load_safetensors(path, option=option, expected=self.expected)
            config = _config_json(header.get(self.metadata_key), where, self.expected)
            folded = header.get(self.fold_key) if self.fold_scale else None
        state = {self.to_peft(str(k)): v for k, v in state.items() if isinstance(v, torch.Tensor)}
        if folded:
            config, scale = _folded(folded, where, self.expected)
            state = {k: v / scale if _is_lora_b(k) else v for k, v in state.items()}
        if not any(".lora_" in k for k in state):
            raise BadFileError(f"{where} holds no LoRA weights (no lora_A / lora_B tensors); give {self.expected}.")
        if config is not None and not isinstance(config, Mapping):
            raise BadFileError(f"{where} has a LoRA config that is a {type(config).__name__}, not a JSON object; "
                               f"give {self.expected}.")
        side = path.parent / self.sidecar if self.sidecar else None
        if not config and side is not None and side.is_file():
            config = read_json(side, expected=f"the JSON config written beside {self.expected}")
            if not isinstance(config, Mapping):
                raise BadFileError(f"{side} is not a JSON object; give {self.expected}.")
        if not config and not fallback:
            return None, state
        if not config and self.infer is not None:
            return self.infer(state), state
        try:
            return self.decode(config or {}), state
        except (TypeError, ValueError) as exc:
            raise BadFileError(f"{where} has a LoRA config audiotrain cannot read ({exc}); give {self.expected}.") from None


def _is_lora_b(key: str) -> bool:
    """PEFT's up-projection (``lora_B``, ``lora_embedding_B``): the factor a folded scale multiplies."""
    return any(part in ("lora_B", "lora_embedding_B") for part in key.split("."))


def _folded(text: Any, where: str, expected: str) -> tuple[Mapping[str, Any], float]:
    """(the real config, the scale folded into lora_B) from a folded file's ``fold_key`` entry."""
    from audiotrain.safe_files import BadFileError

    data = _config_json(text, where, expected) if isinstance(text, str) else text
    scale = data.get("scale_folded_into_lora_B") if isinstance(data, Mapping) else None
    config = data.get("config") if isinstance(data, Mapping) else None
    if (not isinstance(scale, (int, float)) or isinstance(scale, bool) or not math.isfinite(scale) or scale == 0
            or not isinstance(config, Mapping)):
        raise BadFileError(f"{where} says its LoRA scale is folded into lora_B but does not say which scale "
                           f"(a nonzero number) and config; give {expected}.")
    return config, float(scale)


def _config_json(text: Any, where: str, expected: str) -> Any:
    """The config a native file carries as a JSON string (None when it has none)."""
    from audiotrain.safe_files import BadFileError

    if not text:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        raise BadFileError(f"{where} carries a LoRA config that is not valid JSON; give {expected}.") from None


def settings_from_shapes(state: Mapping[str, torch.Tensor]) -> LoRASettings:
    """Settings a bare PEFT-keyed LoRA state implies: r from ``lora_A``'s rows, alpha = r, targets = the
    adapted modules' shortest names (``to_out.0``, not a bare ``0`` that would match every ``*.0``)."""
    a = next((v for k, v in state.items() if k.endswith("lora_A.weight")), None)
    r = int(a.shape[0]) if a is not None else 8
    targets = sorted({target_suffix(k.split(".lora_")[0]) for k in state if ".lora_" in k})
    return LoRASettings(r=r, alpha=r, target_modules=targets)
