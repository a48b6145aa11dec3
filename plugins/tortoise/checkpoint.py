"""TorToiSe's weight files (spec §3.5), read as data and written back in the layout TorToiSe and AIVC load.

- :func:`load_autoregressive` — ``autoregressive.pth`` (or ``_half``) or a fine-tune's ``<iter>_gpt.pth``: a plain
  state dict or ``{"state_dict": ...}``, keys possibly prefixed ``module.`` (DDP), read with
  ``torch.load(weights_only=True)`` through :mod:`audiotrain.safe_files` (a file carrying code is refused). GPT-2's
  ``gpt.h.N.attn.bias`` / ``attn.masked_bias`` mask buffers (the 60 extra keys of files written with
  transformers ≤ 4.30) are dropped; everything else must match the model exactly
  (:func:`audiotrain.models.state_dict.check_state_dict`: one sentence naming missing, unexpected and mis-shaped
  keys). Floating tensors are cast to ``dtype`` (float32: DLAS loads the fp16 ``_half`` file into fp32 weights).
- :func:`save_gpt` — ``<dir>/<step>_gpt.pth``: the plain state dict of CPU tensors (``torch.save`` of tensors only,
  so ``weights_only`` loads it), written atomically; it loads back strictly with no missing or unexpected key.
- :func:`load_dvae` — ``dvae.pth`` (all 53 keys of the DiscreteVAE, strictly).
- :func:`load_mel_norms` — ``mel_norms.pth``: a tensor of 80 floats.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import torch

from audiotrain.models.state_dict import check_state_dict
from audiotrain.safe_files import BadFileError, load_torch, where

from .dvae import DiscreteVAE
from .unified_voice import UnifiedVoice

AR_EXPECTED = "TorToiSe's autoregressive.pth or a fine-tuned <step>_gpt.pth (a UnifiedVoice state dict)"
DVAE_EXPECTED = "TorToiSe's dvae.pth (the DiscreteVAE state dict DL-Art-School fine-tuning uses)"
NORMS_EXPECTED = "TorToiSe's mel_norms.pth (a tensor of 80 floats)"
MASK_BUFFER = re.compile(r"^gpt\.h\.\d+\.attn\.(bias|masked_bias)$")
PREFIX = "module."


def state_dict_of(obj: Any, source: str, expected: str) -> dict[str, torch.Tensor]:
    """The tensors of a loaded file: a plain state dict or ``{"state_dict": ...}``, ``module.`` prefixes removed."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BadFileError(f"{source} is not a state dict (a mapping of names to tensors); pass {expected}.")
    return {(k[len(PREFIX):] if k.startswith(PREFIX) else k): v for k, v in obj.items()}


def drop_mask_buffers(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``(state without GPT-2's attn.bias / attn.masked_bias buffers, the dropped keys)``."""
    dropped = [k for k in state if MASK_BUFFER.match(k)]
    return {k: v for k, v in state.items() if not MASK_BUFFER.match(k)}, dropped


def _cast(state: Mapping[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    if dtype is None:
        return dict(state)
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


def read_autoregressive_state(path: str | Path, *, option: str | None = None) -> dict[str, torch.Tensor]:
    """The UnifiedVoice tensors of a file (unwrapped, unprefixed, mask buffers dropped), not yet checked."""
    path = Path(str(path)).expanduser()
    obj = load_torch(path, option=option, expected=AR_EXPECTED)
    return drop_mask_buffers(state_dict_of(obj, where(option, path), AR_EXPECTED))[0]


def load_autoregressive(path: str | Path, cfg: str | Mapping[str, Any] = "release", *, option: str | None = None,
                        dtype: torch.dtype | None = torch.float32) -> UnifiedVoice:
    """A UnifiedVoice of ``cfg`` (a preset name or config) with the weights of ``path``, loaded strictly, in eval
    mode on the CPU (module doc)."""
    path = Path(str(path)).expanduser()
    state = _cast(read_autoregressive_state(path, option=option), dtype)
    with torch.device("meta"):
        model = UnifiedVoice(cfg)
    check_state_dict(model, state, where(option, path), f"UnifiedVoice of {_describe(model.cfg)}",
                     "pass the file of a TorToiSe autoregressive model of that size (model.preset=release for "
                     "autoregressive.pth and its fine-tunes)")
    model.load_state_dict(state, strict=True, assign=True)
    return model.train(False)


def _describe(cfg: Mapping[str, Any]) -> str:
    return f"{cfg['layers']} layers × {cfg['model_dim']}"


def gpt_file_name(step: int) -> str:
    """DLAS's fine-tune file name: ``<step>_gpt.pth``."""
    return f"{int(step)}_gpt.pth"


def save_gpt(model: UnifiedVoice, directory: str | Path, step: int) -> Path:
    """Write ``<directory>/<step>_gpt.pth`` (module doc); returns its path."""
    from audiotrain.atomic_write import atomic_path

    target = Path(str(directory)).expanduser() / gpt_file_name(step)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}  # tensors, not Parameters
    with atomic_path(target) as tmp:
        torch.save(state, str(tmp))
    return target


def load_dvae(path: str | Path, cfg: str | Mapping[str, Any] = "release", *,
              option: str | None = None) -> DiscreteVAE:
    """The frozen DiscreteVAE of ``cfg`` with the weights of ``path``, loaded strictly."""
    path = Path(str(path)).expanduser()
    obj = load_torch(path, option=option, expected=DVAE_EXPECTED)
    state = _cast(state_dict_of(obj, where(option, path), DVAE_EXPECTED), torch.float32)
    with torch.device("meta"):
        model = DiscreteVAE(cfg)
    check_state_dict(model, state, where(option, path), "the DiscreteVAE of dvae.pth's configuration",
                     "pass dvae.pth itself (model.dvae_preset=release) or a DVAE saved from the same configuration")
    model.load_state_dict(state, strict=True, assign=True)
    model.requires_grad_(False)
    return model.train(False)


def load_mel_norms(path: str | Path, *, option: str | None = None) -> torch.Tensor:
    """The 80 per-band divisors of ``mel_norms.pth`` as a float32 tensor."""
    path = Path(str(path)).expanduser()
    obj = load_torch(path, option=option, expected=NORMS_EXPECTED)
    if not isinstance(obj, torch.Tensor) or obj.numel() != 80 or not obj.is_floating_point():
        what = f"a tensor of {obj.numel()} values" if isinstance(obj, torch.Tensor) else f"a {type(obj).__name__}"
        raise BadFileError(f"{where(option, path)} holds {what}; pass {NORMS_EXPECTED}.")
    norms = obj.detach().float().flatten()
    if not torch.isfinite(norms).all() or bool((norms == 0).any()):
        raise BadFileError(f"{where(option, path)} holds zero or non-finite norms; pass {NORMS_EXPECTED}.")
    return norms
