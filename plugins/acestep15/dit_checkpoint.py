"""Reading and writing an ACE-Step 1.5 DiT variant folder (``acestep-v15-turbo/``, ``acestep-v15-xl-base/`` ...).

A folder holds ``config.json`` (the :class:`DiTConfig` fields; HF keys such as ``auto_map`` are ignored) and
``model.safetensors`` (or ``model.safetensors.index.json`` with its shards). Its ``configuration_*.py`` /
``modeling_*.py`` are never imported: the model is our own code, built on the meta device and filled with the
file's tensors by a strict load (missing, unexpected or mis-shaped keys are one sentence naming a few).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import torch

from audiotrain.hf_folder import check_folder
from audiotrain.models.state_dict import load_strict, savable
from audiotrain.safe_files import BadFileError, load_safetensors, read_json, where

from .dit import AceStepConditionGenerationModel
from .dit_config import DiTConfig, config_from_json

EXPECTED = "an ACE-Step 1.5 DiT folder (config.json + model.safetensors, e.g. acestep-v15-turbo/)"
WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
DIT_KEYS = ("audio_acoustic_hidden_dim", "fsq_dim", "timbre_hidden_dim", "pool_window_size")


def read_dit_config(folder: Path, option: str | None = None) -> DiTConfig:
    """The folder's ``config.json`` as a :class:`DiTConfig`; a config of another model is one sentence."""
    data = read_json(folder / "config.json", option=option, expected=EXPECTED)
    if not isinstance(data, Mapping):
        raise BadFileError(f"{where(option, folder / 'config.json')} is not a JSON object; pass {EXPECTED}.")
    if not any(k in data for k in DIT_KEYS):
        kind = data.get("model_type") or data.get("_class_name") or "another model"
        raise BadFileError(f"{where(option, folder)} holds the config of {kind}, not of the ACE-Step 1.5 DiT "
                           f"(no {DIT_KEYS[0]} or {DIT_KEYS[1]}); pass {EXPECTED}.")
    return config_from_json(data, source=where(option, folder / "config.json"))


def _weights(folder: Path, option: str | None) -> dict[str, torch.Tensor]:
    if (folder / "model.safetensors").is_file():
        return load_safetensors(folder / "model.safetensors", option=option, expected=EXPECTED)
    index = read_json(folder / "model.safetensors.index.json", option=option, expected=EXPECTED)
    shards = sorted(set((index.get("weight_map") or {}).values())) if isinstance(index, Mapping) else []
    if not shards:
        raise BadFileError(f"{where(option, folder / 'model.safetensors.index.json')} names no weight files; "
                           f"pass {EXPECTED}.")
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        state.update(load_safetensors(folder / shard, option=option, expected=EXPECTED))
    return state


def load_dit(folder: str | Path, *, dtype: torch.dtype | None = torch.float32,
             option: str | None = None) -> AceStepConditionGenerationModel:
    """The model of a released variant folder, on the CPU in ``dtype`` (None: the file's dtype).
    ``option`` names the setting that gave the path in messages (e.g. ``model.checkpoint_dir``)."""
    root = check_folder(folder, option=option, expected=EXPECTED, weights=WEIGHTS)
    config = read_dit_config(root, option)
    with torch.device("meta"):
        model = AceStepConditionGenerationModel(config)
    raw = _weights(root, option)
    # a fresh copy of each tensor: safetensors' buffers are not aligned like torch's own, which changes CPU
    # kernels' rounding; the copies make a loaded model compute exactly what the saved one did
    state = {}
    for key in list(raw):
        tensor = raw.pop(key)
        state[key] = tensor.to(dtype or tensor.dtype, copy=True)
    load_strict(model, state, where(option, root / "model.safetensors"),
                "the ACE-Step 1.5 DiT its config.json describes",
                "give the folder of one released variant with its own config.json", assign=True)
    return model


def save_dit(model: AceStepConditionGenerationModel, folder: str | Path,
             dtype: torch.dtype | None = None) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (in ``dtype``, default the model's) to ``folder``."""
    from safetensors.torch import save_file

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: (v.to(dtype) if dtype is not None else v) for k, v in model.state_dict().items()}
    save_file(savable(state), str(out / "model.safetensors"), metadata={"format": "pt"})
    config = {"architectures": ["AceStepConditionGenerationModel"], "model_type": "acestep",
              **model.config.to_json()}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return out
