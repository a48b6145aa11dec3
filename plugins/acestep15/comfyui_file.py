"""The ComfyUI-ready adapter: one safetensors file ComfyUI's LoRA loader applies to its ACE-Step 1.5 model.

**Keys.** ComfyUI accepts a LoRA whose module names are its model's state-dict names without ``.weight`` (the
"generic" format of ``model_lora_keys_unet``), and its diffusion model's names start ``diffusion_model.``. For
ACE-Step 1.5 that model is the DiT (``decoder``, ``encoder``, ...), so a decoder layer is
``diffusion_model.decoder.layers.0.self_attn.q_proj``. ⚠ The ``diffusion_model.`` prefix is ComfyUI's general
rule; that its ACE-Step 1.5 class keeps the original ``decoder.`` attribute name is not verified here: the prefix
is the ``prefix`` argument (``COMFYUI_PREFIX`` by default). LoRA tensors are ``.lora_down.weight`` (PEFT's
``lora_A``) and ``.lora_up.weight`` (``lora_B``); LoKr tensors keep LyCORIS' names (``.lokr_w1`` ...,
:mod:`.lokr_file`).

**Scale.** ComfyUI plays a LoRA at ``strength × alpha / rank`` with ``alpha`` read from each module's
``.alpha`` tensor, and at ``strength × 1`` when the file has none. PEFT's files (ACE-Step 1.5's
``adapter_model.safetensors``) keep alpha only in ``adapter_config.json``, which ComfyUI never reads: an
adapter trained at r 64 / alpha 128 then plays at half its strength, hence the 1.5–2.0 strengths ComfyUI users
set (ComfyUI#12374). This file stores ``.alpha`` = the trained scale × rank (alpha for LoRA, alpha·√r for
rsLoRA), so strength 1.0 is the output audiotrain trained. A LoKr layer follows ComfyUI's LoKr rule (alpha /
rank only when a factor is low-rank), met as in :mod:`.lokr_file`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping

import torch

from audiotrain.lora.adapter import LoRASettings, target_suffix

from . import lokr_file

COMFYUI_PREFIX = "diffusion_model."
FILENAME = "acestep15_comfyui.safetensors"
EXPECTED = f"the ComfyUI adapter audiotrain writes ({FILENAME})"
SETTINGS_KEY = "audiotrain_adapter"  # the trained settings, for audiotrain reading the file back
LORA_PARTS = {"lora_A.weight": "lora_down.weight", "lora_B.weight": "lora_up.weight"}


def save(state: Mapping[str, torch.Tensor], settings: LoRASettings, directory: str | Path,
         prefix: str = COMFYUI_PREFIX) -> Path:
    """PEFT-keyed adapter tensors (the DiT's module names) → ``directory/acestep15_comfyui.safetensors``."""
    from safetensors.torch import save_file

    out: dict[str, torch.Tensor] = {}
    metadata = {"format": "pt", "audiotrain_algo": settings.algo, SETTINGS_KEY: json.dumps(settings.to_json())}
    if settings.algo == "lokr":
        out, extra = lokr_file.to_lycoris(state, settings.scale, settings.r, lambda m: prefix + m)
        metadata.update(extra)
    else:
        for key, value in state.items():
            module, _, part = key.partition(".lora_")
            out[f"{prefix}{module}.{LORA_PARTS['lora_' + part]}"] = value.contiguous()
            out.setdefault(f"{prefix}{module}.alpha", torch.tensor(float(settings.scale * settings.r)))
    path = Path(directory) / FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path), metadata=metadata)
    return path


def load(path: str | Path, modules: Iterable[str], prefix: str = COMFYUI_PREFIX
         ) -> tuple[LoRASettings, dict[str, torch.Tensor]]:
    """The file → (settings, PEFT-keyed tensors). Strict: every key must be a LoRA (or LoKr) tensor or alpha of
    one of ``modules`` (the DiT's adapted module names), each with all its parts; else one sentence."""
    from audiotrain.safe_files import BadFileError, load_safetensors, safetensors_metadata

    path = Path(path).expanduser()
    path = path / FILENAME if path.is_dir() else path
    header = safetensors_metadata(path, expected=EXPECTED)
    tensors = load_safetensors(path, expected=EXPECTED)
    known = set(modules)

    def module(stem: str) -> str | None:
        name = stem[len(prefix):] if stem.startswith(prefix) else None
        return name if name in known else None

    if header.get("audiotrain_algo") == "lokr":
        state = lokr_file.from_lycoris(tensors, header, module, str(path), EXPECTED)
        return _settings(header, path), state
    state: dict[str, torch.Tensor] = {}
    alphas: dict[str, float] = {}
    back = {v: k for k, v in LORA_PARTS.items()}
    for key, value in tensors.items():
        stem, part = (key[: -len(".alpha")], "alpha") if key.endswith(".alpha") else \
            next(((key[: -len(p) - 1], p) for p in back if key.endswith("." + p)), (key, ""))
        name = module(stem)
        if name is None or not part:
            raise BadFileError(f"{path} has the unexpected key {key}, which is no LoRA tensor of this model's adapted "
                               f"layers (under {prefix!r}); give {EXPECTED}.")
        if part == "alpha":
            alphas[name] = float(value)
        else:
            state[f"{name}.{back[part]}"] = value
    for name in known:
        for part in ("lora_A.weight", "lora_B.weight"):
            if f"{name}.{part}" not in state:
                raise BadFileError(f"{path} lacks {prefix}{name}.{LORA_PARTS[part]}; give {EXPECTED}.")
        if name not in alphas:
            raise BadFileError(f"{path} lacks {prefix}{name}.alpha; give {EXPECTED}.")
    if header.get(SETTINGS_KEY):
        return _settings(header, path), state
    r = int(next(v for k, v in state.items() if k.endswith("lora_A.weight")).shape[0])
    targets = sorted({target_suffix(n) for n in known})
    return LoRASettings(r=r, alpha=next(iter(alphas.values())), target_modules=targets), state


def _settings(header: Mapping[str, str], path: Path) -> LoRASettings:
    from audiotrain.safe_files import BadFileError

    try:
        return LoRASettings.from_json(json.loads(header[SETTINGS_KEY]))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise BadFileError(f"{path} lacks the {SETTINGS_KEY} header entry audiotrain writes (or it is not JSON); "
                           f"give {EXPECTED}.") from None
