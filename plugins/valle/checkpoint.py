"""Reading and writing the original VALL-E export (``fp32.sft`` / ``fp32.pth``, spec §4.6) from local disk.

Layout: ``{"module": state dict, "stats": {...}, "userdata": {"symmap": {phoneme: id}}, "config": Model dict}``.

- ``.pth``: that dict as written by ``torch.save``.
- ``.sft`` (safetensors): the tensors, named ``module.<key>`` (plain ``<key>`` is accepted too);
  the non-tensor entries ``config``, ``userdata`` and ``stats`` are JSON strings in the header metadata.

The model is built from the embedded config (see :func:`audiotrain_valle.presets.resolve_config`)
and loaded strictly: any missing, unexpected or mis-shaped key is a
:class:`~audiotrain.models.state_dict.StateDictMismatch` (one sentence).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch

from audiotrain.errors import UserError
from audiotrain.models.state_dict import check_state_dict

from .ar_nar import ARNAR
from .presets import to_original_config

SFT_SUFFIXES = (".sft", ".safetensors")
PTH_SUFFIXES = (".pth", ".pt")


def _json(value: Any) -> Any:
    """Metadata values are JSON strings (sometimes nested); decode until not a string."""
    while isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _strip_module(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if any(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items() if k.startswith("module.")}
    return dict(state)


def read_exported(path: str | Path, trust_pickle: bool = False) -> tuple[dict[str, torch.Tensor], dict | None, dict, dict]:
    """Read an export without building a model: (state dict, config or None, userdata, stats).

    ``.pth`` files are opened with ``torch.load(weights_only=True)`` unless ``trust_pickle``.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"VALL-E weights file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in SFT_SUFFIXES:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = {k: _json(v) for k, v in (f.metadata() or {}).items()}
            state = {k: f.get_tensor(k) for k in f.keys()}
        userdata = meta.get("userdata") or {}
        if "symmap" not in userdata and "userdata.symmap" in meta:
            userdata = {**userdata, "symmap": meta["userdata.symmap"]}
        return _strip_module(state), meta.get("config"), dict(userdata), dict(meta.get("stats") or {})
    if suffix in PTH_SUFFIXES:
        try:
            blob = torch.load(str(path), map_location="cpu", weights_only=not trust_pickle)
        except Exception as e:  # the pickle holds objects outside the safe allow-list
            raise UserError(f"{path} could not be read with torch.load(weights_only=True) ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}); pass trust_pickle=True only if you trust the file") from e
        if not isinstance(blob, Mapping):
            raise UserError(f"{path} holds a {type(blob).__name__}, not the exported dict with a 'module' state dict")
        if "module" in blob and isinstance(blob["module"], Mapping):
            state = blob["module"]
        else:
            state = {k: v for k, v in blob.items() if isinstance(v, torch.Tensor)}
        return (_strip_module(state), _json(blob.get("config")), dict(_json(blob.get("userdata")) or {}),
                dict(_json(blob.get("stats")) or {}))
    raise UserError(f"{path}: unknown VALL-E weights format {suffix!r}; expected one of {SFT_SUFFIXES + PTH_SUFFIXES}")


def load_exported(path: str | Path, config: Mapping[str, Any] | str | None = None, trust_pickle: bool = False,
                  device: str | torch.device = "cpu") -> tuple[ARNAR, dict[str, int], dict]:
    """Load an exported ``.sft``/``.pth``: returns (model in eval mode, symmap, embedded config).

    ``config`` overrides the embedded one (needed when the file carries none). Weights stored in
    half precision are loaded into the float32 model. The symmap is ``{}`` when the file has none.
    """
    state, embedded, userdata, _ = read_exported(path, trust_pickle)
    cfg = config if config is not None else embedded
    if cfg is None:
        raise UserError(f"{path} carries no embedded config; pass config= (a preset name or the model dict)")
    try:
        with torch.device("meta"):
            model = ARNAR(cfg)
    except ValueError as e:
        raise UserError(f"{path}: cannot build a VALL-E model from its config: {e}") from e
    check_state_dict(model, state, str(path), "the VALL-E model built from its config",  # on meta: nothing allocated
                     "pass config= (a preset name or the model dict) that describes these weights")
    model = model.to_empty(device=device)
    model.load_state_dict(state, strict=True)  # copies: half-precision files load into the float32 model
    symmap = _json(userdata.get("symmap")) or {}
    return model.eval(), dict(symmap), dict(embedded if isinstance(embedded, Mapping) else model.config)


def save_exported(model: ARNAR, path: str | Path, symmap: Mapping[str, int] | None = None,
                  config: Mapping[str, Any] | None = None, stats: Mapping[str, Any] | None = None,
                  dtype: torch.dtype | None = None) -> Path:
    """Write ``model`` (a plain ARNAR: merge any LoRA first) in the original export layout.

    The suffix picks the format (``.sft``/``.safetensors`` or ``.pth``/``.pt``). ``config``
    defaults to the original-style dict of ``model.config``; ``dtype`` casts floating tensors.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    config = dict(config) if config is not None else to_original_config(model.config)
    userdata = {"symmap": dict(symmap or {})}
    stats = dict(stats or {})
    suffix = path.suffix.lower()
    if suffix not in SFT_SUFFIXES + PTH_SUFFIXES:
        raise UserError(f"{path}: unknown VALL-E weights format {suffix!r}; expected one of {SFT_SUFFIXES + PTH_SUFFIXES}")
    from audiotrain.atomic_write import atomic_path

    with atomic_path(path) as tmp:  # complete or not at all: a kill or a full disk keeps an earlier file
        if suffix in SFT_SUFFIXES:
            from safetensors.torch import save_file

            meta = {"config": json.dumps(config), "userdata": json.dumps(userdata), "stats": json.dumps(stats)}
            save_file({f"module.{k}": v for k, v in state.items()}, str(tmp), metadata=meta)
        else:
            with open(tmp, "wb") as fh:
                torch.save({"module": state, "stats": stats, "userdata": userdata, "config": config}, fh)
    return path
