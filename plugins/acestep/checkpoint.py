"""Finding and loading the released ACE-Step v1 checkpoint (four folders) from local disk only."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from audiotrain.errors import UserError
from audiotrain.models.state_dict import load_strict

SUBDIRS = ("music_dcae_f8c8", "music_vocoder", "ace_step_transformer", "umt5-base")
HF_REPO_FOLDER = "models--ACE-Step--ACE-Step-v1-3.5B"


class WeightsNotFound(UserError):
    pass


def _complete(d: Path) -> bool:
    return all((d / s).is_dir() for s in SUBDIRS)


def hf_cache_roots() -> list[Path]:
    roots = []
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            roots.append(Path(os.environ[var]))
    if os.environ.get("HF_HOME"):
        roots.append(Path(os.environ["HF_HOME"]) / "hub")
    roots.append(Path.home() / ".cache" / "huggingface" / "hub")
    return roots


def locate(checkpoint_dir: str | None) -> Path:
    """The folder holding the four sub-folders; a clear error when the weights are nowhere."""
    if checkpoint_dir:
        d = Path(checkpoint_dir).expanduser()
        if not d.exists():
            raise WeightsNotFound(f"model.checkpoint_dir={checkpoint_dir}: no such folder; put the ACE-Step v1-3.5B "
                                  f"folders ({', '.join(s + '/' for s in SUBDIRS)}) there, or use model.preset=tiny "
                                  f"to try audiotrain without weights.")
        if not d.is_dir():
            raise WeightsNotFound(f"model.checkpoint_dir={checkpoint_dir} is a file, not a folder; pass the folder "
                                  f"that holds {', '.join(s + '/' for s in SUBDIRS)} (or use model.preset=tiny).")
        if _complete(d):
            return d
        for sub in d.glob(f"{HF_REPO_FOLDER}/snapshots/*") if d.is_dir() else []:
            if _complete(sub):
                return sub
        missing = [s for s in SUBDIRS if not (d / s).is_dir()]
        raise WeightsNotFound(
            f"model.checkpoint_dir={checkpoint_dir} lacks {', '.join(s + '/' for s in missing)}: put the ACE-Step v1-3.5B "
            f"folders ({', '.join(s + '/' for s in SUBDIRS)}) there, or use model.preset=tiny to try audiotrain without weights.")
    for root in hf_cache_roots():
        for sub in sorted((root / HF_REPO_FOLDER / "snapshots").glob("*")) if (root / HF_REPO_FOLDER).is_dir() else []:
            if _complete(sub):
                return sub
    raise WeightsNotFound(
        "The ACE-Step v1-3.5B weights are not on this machine (looked in the Hugging Face cache "
        f"{hf_cache_roots()[-1]}): put the folders {', '.join(s + '/' for s in SUBDIRS)} in a directory and pass "
        "model.checkpoint_dir=DIR, or use model.preset=tiny to try audiotrain without weights.")


def read_config(folder: Path) -> dict:
    from audiotrain.safe_files import BadFileError, read_json

    p = folder / "config.json"
    if not p.is_file():
        return {}
    expected = f"the {folder.name}/ folder of the ACE-Step v1-3.5B release"
    data = read_json(p, option="model.checkpoint_dir", expected=expected)
    if not isinstance(data, dict):
        raise BadFileError(f"model.checkpoint_dir: {p} is not a JSON object; pass {expected}.")
    return {k: v for k, v in data.items() if not k.startswith("_")}


def load_transformer(root: Path, dtype: torch.dtype = torch.float32):
    """Build the transformer from its config.json on the meta device, then assign the safetensors weights."""
    from audiotrain.safe_files import load_safetensors

    from audiotrain_acestep.presets import PRESETS
    from audiotrain_acestep.transformer import ACEStepTransformer2DModel

    folder = root / "ace_step_transformer"
    config = {**PRESETS["v1-3.5b"], **read_config(folder)}
    weights = folder / "diffusion_pytorch_model.safetensors"
    if not weights.is_file():
        raise WeightsNotFound(f"{weights} is missing: the ace_step_transformer/ folder needs its safetensors file.")
    with torch.device("meta"):
        model = ACEStepTransformer2DModel(config)
    state = {k: v.to(dtype) for k, v in load_safetensors(
        weights, option="model.checkpoint_dir", expected="the ace_step_transformer/ folder of the ACE-Step v1-3.5B "
                                                          "release").items()}
    load_strict(model, state, str(weights), "the ACE-Step transformer its config.json describes",
                "give the ace_step_transformer/ folder of the ACE-Step v1-3.5B release", assign=True)
    return model  # non-persistent caches (RoPE, positions) rebuild themselves on first use
