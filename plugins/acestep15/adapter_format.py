"""ACE-Step 1.5's own adapter files, written beside audiotrain's PEFT folder at every adapter save, and read back
strictly (a missing or unexpected key is one sentence).

audiotrain's adapter root is the whole DiT, so its PEFT keys are ``decoder.layers.0.self_attn.q_proj.lora_A.weight``.
ACE-Step 1.5 applies its adapters to ``model.decoder`` alone, so its files name modules from the decoder down:

- **LoRA** → ``adapter/adapter_config.json`` + ``adapter/adapter_model.safetensors`` with keys
  ``base_model.model.layers.{i}.{self,cross}_attn.{q,k,v,o}_proj.lora_{A,B}.weight``: what ACE-Step 1.5's trainer
  saves and its UI loads with ``PeftModel.from_pretrained(decoder, folder)``. Scale: that loader reads ``r`` and
  ``lora_alpha`` from the JSON and sets ``scaling = (alpha / r) · scale``, the UI's scale clamped to [0, 1]; the
  JSON holds the trained r and alpha (and rsLoRA when used), so the UI's default scale 1.0 is the trained output.
  ``target_modules`` is the shortest list that selects exactly the adapted layers on a bare decoder
  (``[q_proj, k_proj, v_proj, o_proj]`` for the default targets, as ACE-Step 1.5 writes it).
- **LoKr** → ``lokr_weights.safetensors`` with the header ACE-Step 1.5 reads (``algo`` = ``lokr``, ``format`` =
  ``lycoris``, ``lokr_config`` = the JSON its ``LoKRConfig`` holds: ``linear_dim`` = r, ``linear_alpha`` = alpha,
  ``factor``, ``decompose_both`` ...) and LyCORIS keys (``lycoris_layers_0_self_attn_q_proj.lokr_w1`` ...).
  Scale: ACE-Step 1.5 rebuilds the LyCORIS network from ``lokr_config`` and uses its scale as LyCORIS'
  multiplier, so 1.0 plays LyCORIS' own scale, which :mod:`.lokr_file` makes equal to PEFT's alpha / r.
- **ComfyUI** → ``acestep15_comfyui.safetensors`` (:mod:`.comfyui_file`): ``.alpha`` tensors so strength 1.0 is
  the trained output (ComfyUI needs 1.5–2.0 with the original files, which carry no alpha tensors).

The plugin calls :func:`save_native` from ``Plugin.save_adapter_native``; :func:`load_native` reads ACE-Step 1.5's
two back to audiotrain's PEFT-keyed tensors, strictly: ``lora.init_from`` takes them (``Plugin.read_adapter_native``
through :func:`native_layout`), whether audiotrain or ACE-Step 1.5's trainer wrote them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import torch
from torch import nn

from audiotrain.lora.adapter import PEFT_PREFIX, LoRASettings, adapter_state, matches

from . import comfyui_file, lokr_file

ROOT = "decoder."           # the submodule of the DiT that ACE-Step 1.5 adapts
PEFT_DIR = "adapter"
LOKR_FILE = "lokr_weights.safetensors"
LYCORIS_PREFIX = "lycoris_"
EXPECTED = "an ACE-Step 1.5 adapter (adapter/ with adapter_config.json + adapter_model.safetensors, or " \
           "lokr_weights.safetensors)"


def decoder_modules(state: Mapping[str, torch.Tensor]) -> list[str]:
    """The adapted modules of a PEFT-keyed state, decoder-relative (``layers.0.self_attn.q_proj``)."""
    return [n[len(ROOT):] for n in adapted_modules(state)]


def layout_problem(state: Mapping[str, torch.Tensor]) -> str | None:
    """One sentence when an adapter adapts modules outside the decoder (ACE-Step 1.5 cannot load those)."""
    outside = sorted({k.split(".")[0] for k in state if not k.startswith(ROOT)})
    if outside:
        return (f"the adapter adapts modules outside the decoder ({', '.join(outside)}), which ACE-Step 1.5 cannot "
                f"load: keep lora.target_modules in the decoder for its files.")
    return None


def compact_targets(adapted: Sequence[str], names: Iterable[str]) -> list[str]:
    """The shortest PEFT ``target_modules`` that selects exactly ``adapted`` among the decoder's ``names``:
    leaf names (``q_proj``), then two-part names (``self_attn.q_proj``), else the full names."""
    names, want = list(names), set(adapted)
    for depth in (1, 2):
        candidate = sorted({".".join(n.split(".")[-depth:]) for n in want})
        if {n for n in names if any(matches(n, t) for t in candidate)} == want:
            return candidate
    return sorted(want)


def lokr_config(settings: LoRASettings, targets: list[str]) -> dict:
    """ACE-Step 1.5's ``LoKRConfig`` fields for these settings (every LyCORIS option audiotrain does not use off)."""
    return {"linear_dim": settings.r, "linear_alpha": settings.alpha, "factor": settings.decompose_factor,
            "decompose_both": settings.decompose_both, "use_tucker": False, "use_scalar": False,
            "weight_decompose": False, "full_matrix": False, "bypass_mode": False, "rs_lora": False,
            "unbalanced_factorization": False, "target_modules": targets}


def lycoris_stem(module: str) -> str:
    return LYCORIS_PREFIX + module.replace(".", "_")


def save_native(root: nn.Module, settings: LoRASettings, directory: str | Path,
                comfyui_prefix: str = comfyui_file.COMFYUI_PREFIX) -> Path | None:
    """Write ACE-Step 1.5's file(s) and the ComfyUI file for the adapter attached to ``root`` (the DiT) into
    ``directory``; returns the ACE-Step 1.5 file or folder (None when the adapter reaches outside the decoder,
    which ACE-Step 1.5 cannot load: the ComfyUI file is still written)."""
    state = adapter_state(root)
    directory = Path(directory)
    comfyui_file.save(state, settings, directory, comfyui_prefix)
    if layout_problem(state):
        return None
    decoder = root.get_submodule(ROOT.rstrip("."))
    adapted = decoder_modules(state)
    targets = compact_targets(adapted, [n for n, _ in decoder.named_modules() if n])
    if settings.algo == "lokr":
        return _save_lokr(state, settings, targets, directory)
    return _save_lora(state, settings, targets, directory)


def _save_lora(state, settings: LoRASettings, targets: list[str], directory: Path) -> Path:
    from dataclasses import replace

    from safetensors.torch import save_file

    folder = directory / PEFT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    config = replace(settings, target_modules=targets).to_peft()
    config.task_type = "FEATURE_EXTRACTION"  # as ACE-Step 1.5's trainer writes it
    config.save_pretrained(str(folder))
    tensors = {PEFT_PREFIX + k[len(ROOT):]: v.contiguous() for k, v in state.items()}
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    return folder


def _save_lokr(state, settings: LoRASettings, targets: list[str], directory: Path) -> Path:
    from safetensors.torch import save_file

    relative = {k[len(ROOT):]: v for k, v in state.items()}
    tensors, extra = lokr_file.to_lycoris(relative, settings.scale, settings.r, lycoris_stem)
    metadata = {"algo": "lokr", "format": "lycoris", "lokr_config": json.dumps(lokr_config(settings, targets)),
                comfyui_file.SETTINGS_KEY: json.dumps(settings.to_json()), **extra}
    path = directory / LOKR_FILE
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


def adapted_modules(state: Mapping[str, torch.Tensor]) -> list[str]:
    """The adapted module names of a PEFT-keyed state (``decoder.layers.0.self_attn.q_proj``), LoRA or LoKr."""
    return sorted({k.split(".lora_")[0] if ".lora_" in k else k.rpartition(".")[0] for k in state})


def native_layout(path: str | Path) -> Path | None:
    """``path`` when it is in one of ACE-Step 1.5's layouts (a folder holding ``adapter/`` or
    ``lokr_weights.safetensors``, either of those, a LyCORIS LoKr file, or a PEFT folder keyed from the decoder
    down), else None (audiotrain's own PEFT folder, keyed from the DiT, is the core's to read). Only file names and
    safetensors headers are looked at."""
    from safetensors import safe_open

    path = Path(path).expanduser()
    if path.is_dir() and ((path / LOKR_FILE).is_file() or (path / PEFT_DIR / "adapter_config.json").is_file()):
        return path
    weights = path / "adapter_model.safetensors" if path.is_dir() else path
    if not weights.is_file() or weights.suffix != ".safetensors":
        return None
    try:
        with safe_open(str(weights), framework="pt") as f:
            header, keys = f.metadata() or {}, list(f.keys())
    except Exception:  # not a safetensors file: the core's reader says so in one sentence
        return None
    if weights.name != "adapter_model.safetensors":
        return path if header.get("algo") == "lokr" and header.get("format") == "lycoris" else None
    own = PEFT_PREFIX + ROOT
    return path if keys and not any(k.startswith(own) for k in keys) else None


def load_native(path: str | Path, modules: Iterable[str]) -> tuple[LoRASettings, dict[str, torch.Tensor]]:
    """ACE-Step 1.5's adapter folder or ``lokr_weights.safetensors`` (or the folder holding either) → (settings,
    PEFT-keyed tensors under the DiT's names). ``modules``: the DiT's adapted module names the file must cover
    exactly (``decoder.layers.0.self_attn.q_proj`` ...); a missing or unexpected key is one sentence."""
    from audiotrain.safe_files import BadFileError

    path = Path(path).expanduser()
    if path.is_dir() and (path / LOKR_FILE).is_file():
        path = path / LOKR_FILE
    elif path.is_dir() and (path / PEFT_DIR).is_dir():
        path = path / PEFT_DIR
    modules = sorted(modules)
    if path.is_file() and path.name.endswith(".safetensors") and path.name != "adapter_model.safetensors":
        settings, state = _load_lokr(path, modules)
    elif path.is_dir() or path.name == "adapter_model.safetensors":
        settings, state = _load_lora(path if path.is_dir() else path.parent, modules)
    else:
        raise BadFileError(f"{path} is not {EXPECTED}.")
    _check_covers(state, modules, str(path))
    return settings, state


def _load_lora(folder: Path, modules: list[str]) -> tuple[LoRASettings, dict[str, torch.Tensor]]:
    from audiotrain.lora.adapter import load_peft
    from audiotrain.safe_files import BadFileError

    settings, raw = load_peft(folder)
    known = {m[len(ROOT):] for m in modules}
    state = {}
    for key, value in raw.items():
        module, _, part = key.partition(".lora_")
        if module not in known or part not in ("A.weight", "B.weight"):
            raise BadFileError(f"{folder / 'adapter_model.safetensors'} has the unexpected key {PEFT_PREFIX}{key}, "
                               f"which is no LoRA tensor of this model's adapted decoder layers; give {EXPECTED}.")
        state[ROOT + key] = value
    for module in sorted(known):
        for part in ("lora_A.weight", "lora_B.weight"):
            if f"{ROOT}{module}.{part}" not in state:
                raise BadFileError(f"{folder / 'adapter_model.safetensors'} lacks {PEFT_PREFIX}{module}.{part} (the "
                                   f"adapter of {ROOT}{module}); give {EXPECTED} trained for this model's preset "
                                   f"and targets.")
    from dataclasses import replace

    return replace(settings, target_modules=sorted(modules)), state


def _load_lokr(path: Path, modules: list[str]) -> tuple[LoRASettings, dict[str, torch.Tensor]]:
    from audiotrain.safe_files import BadFileError, load_safetensors, safetensors_metadata

    header = safetensors_metadata(path, expected=EXPECTED)
    if header.get("algo") != "lokr" or header.get("format") != "lycoris":
        raise BadFileError(f"{path} does not say algo=lokr, format=lycoris in its header; give {EXPECTED}.")
    tensors = load_safetensors(path, expected=EXPECTED)
    stems = {lycoris_stem(m[len(ROOT):]): m for m in modules}
    state = lokr_file.from_lycoris(tensors, header, stems.get, str(path), EXPECTED)
    if header.get(comfyui_file.SETTINGS_KEY):
        settings = LoRASettings.from_json(json.loads(header[comfyui_file.SETTINGS_KEY]))
    else:  # ACE-Step 1.5's own file: its lokr_config
        try:
            cfg = json.loads(header.get("lokr_config") or "")
            settings = LoRASettings(r=int(cfg["linear_dim"]), alpha=float(cfg["linear_alpha"]), algo="lokr",
                                    decompose_both=bool(cfg.get("decompose_both", False)),
                                    decompose_factor=int(cfg.get("factor", -1)), target_modules=sorted(modules))
        except (KeyError, TypeError, ValueError):
            raise BadFileError(f"{path} has no lokr_config JSON with linear_dim and linear_alpha; give "
                               f"{EXPECTED}.") from None
    return settings, state


def _check_covers(state: Mapping[str, torch.Tensor], modules: list[str], where: str) -> None:
    from audiotrain.safe_files import BadFileError

    missing = sorted(set(modules) - set(adapted_modules(state)))
    if missing:
        raise BadFileError(f"{where} lacks the adapter of {missing[0]} ({len(missing)} adapted layers missing); "
                           f"give {EXPECTED} trained for this model's preset and targets.")
