"""ACE-Step 1.5's ``vae/`` folder read as data and written back: ``config.json`` (diffusers ``AutoencoderOobleck``
constructor values) + ``diffusion_pytorch_model.safetensors`` (the state dict, ``weight_g``/``weight_v`` per
weight-normalised convolution).

Loading is strict: every key of the model the config describes must be in the file with its shape, and the file
may hold nothing else; any difference is one sentence naming the folder, the counts and a few example keys.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from audiotrain.errors import UserError
from audiotrain.safe_files import BadFileError, load_safetensors, read_json, where

from .vae import OobleckConfig, OobleckVAE

__all__ = ["VAE_WEIGHTS", "load_vae", "save_vae"]

VAE_WEIGHTS = "diffusion_pytorch_model.safetensors"
_EXPECTED = "ACE-Step 1.5's vae/ folder (config.json + diffusion_pytorch_model.safetensors)"


def _folder(path: str | Path, option: str | None) -> Path:
    folder = Path(str(path)).expanduser()
    shown = where(option, folder)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise BadFileError(f"{shown} {what}; pass {_EXPECTED}.")
    lacks = [n for n in ("config.json", VAE_WEIGHTS) if not (folder / n).is_file()]
    if lacks:
        raise BadFileError(f"{shown} lacks {' and '.join(lacks)}; pass {_EXPECTED}.")
    return folder


def load_vae(path: str | Path, *, option: str | None = None, dtype: torch.dtype = torch.float32,
             device: torch.device | str = "cpu") -> OobleckVAE:
    """The frozen (eval, no grad) :class:`OobleckVAE` of a ``vae/`` folder, weights cast to ``dtype``."""
    folder = _folder(path, option)
    shown = where(option, folder)
    try:
        cfg = OobleckConfig.from_json(read_json(folder / "config.json", option=option, expected=_EXPECTED),
                                      where=where(option, folder / "config.json"))
    except UserError:
        raise
    except (TypeError, ValueError) as exc:
        raise BadFileError(f"{where(option, folder / 'config.json')} is not an AutoencoderOobleck config ({exc}); "
                           f"pass {_EXPECTED}.") from None
    state = load_safetensors(folder / VAE_WEIGHTS, option=option, expected=_EXPECTED)
    with torch.device("meta"):
        vae = OobleckVAE(cfg)
    want = {k: tuple(v.shape) for k, v in vae.state_dict().items()}
    missing = sorted(set(want) - set(state))
    unexpected = sorted(set(state) - set(want))
    misshaped = sorted(k for k in set(want) & set(state) if tuple(state[k].shape) != want[k])
    if missing or unexpected or misshaped:
        examples = ", ".join([*missing[:2], *unexpected[:2],
                              *(f"{k} {list(state[k].shape)} (wants {list(want[k])})" for k in misshaped[:2])])
        raise BadFileError(f"{where(option, folder / VAE_WEIGHTS)} does not fit the AutoencoderOobleck its "
                           f"config.json describes ({len(missing)} missing, {len(unexpected)} unexpected and "
                           f"{len(misshaped)} mis-shaped weights, e.g. {examples}); pass {_EXPECTED}.")
    vae.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in state.items()}, strict=True, assign=True)
    if any(p.device.type == "meta" for p in vae.parameters()):
        raise BadFileError(f"{shown} left weights unset after loading; pass {_EXPECTED}.")
    return vae.eval().requires_grad_(False)


def save_vae(vae: OobleckVAE, path: str | Path) -> Path:
    """Write ``vae`` as a ``vae/`` folder (``config.json`` + ``diffusion_pytorch_model.safetensors``) that
    :func:`load_vae` (and diffusers' ``AutoencoderOobleck.from_pretrained``) reads."""
    from safetensors.torch import save_file

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(vae.config.to_json(), indent=2) + "\n", encoding="utf-8")
    state = {k: v.detach().to("cpu").contiguous() for k, v in vae.state_dict().items()}
    save_file(state, str(folder / VAE_WEIGHTS), metadata={"format": "pt"})
    return folder
