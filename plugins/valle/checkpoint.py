"""Reading and writing the original VALL-E export (``fp32.sft`` / ``fp32.pth``, spec §4.6) from local disk.

Layout: ``{"module": state dict, "stats": {...}, "userdata": {"symmap": {phoneme: id}}, "config": Model dict}``.

- ``.pth``: that dict as written by ``torch.save``.
- ``.sft`` (safetensors): the tensors under their plain state-dict names (``classifiers.proj.0.weight``, as
  the original writes and reads them); the non-tensor entries ``config``, ``userdata`` and ``stats`` are each
  one JSON string in the header metadata (the original ``json.loads`` each and puts the tensors under
  ``module``). Files audiotrain wrote before, with every tensor named ``module.<key>``, are read too.

:func:`export_blob` is the one place the written layout is decided: the ``.pth`` dict, whose ``module`` keys
and ``config`` are also what the ``.sft`` holds.

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
    """Plain keys: audiotrain's exports before issue 15 named every ``.sft`` tensor ``module.<key>``."""
    if any(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items() if k.startswith("module.")}
    return dict(state)


EXPECTED = "the exported fp32.sft or fp32.pth of a VALL-E model"


def read_exported(path: str | Path, trust_pickle: bool = False, option: str | None = "model.weights"
                  ) -> tuple[dict[str, torch.Tensor], dict | None, dict, dict]:
    """Read an export without building a model: (state dict, config or None, userdata, stats).

    Read as data (:mod:`audiotrain.safe_files`): ``.sft`` as safetensors, ``.pth`` with
    ``torch.load(weights_only=True)`` unless ``trust_pickle`` (DANGEROUS: runs any code the file carries). A
    missing, empty, truncated, crafted or foreign file is one sentence naming ``option=path``.
    """
    from audiotrain.safe_files import BadFileError, check_file, load_safetensors, load_torch, safetensors_metadata

    path = check_file(path, option=option, expected=EXPECTED)
    where = f"{option}={path}" if option else str(path)
    suffix = path.suffix.lower()
    if suffix in SFT_SUFFIXES:
        meta = {k: _json(v) for k, v in safetensors_metadata(path, option=option, expected=EXPECTED).items()}
        state = load_safetensors(path, option=option, expected=EXPECTED)
        userdata = meta.get("userdata") or {}
        if "symmap" not in userdata and "userdata.symmap" in meta:
            userdata = {**userdata, "symmap": meta["userdata.symmap"]}
        state, config, userdata, stats = (_strip_module(state), meta.get("config"), userdata, meta.get("stats") or {})
    elif suffix in PTH_SUFFIXES:
        blob = load_torch(path, option=option, expected=EXPECTED, trust_pickle=trust_pickle)
        if not isinstance(blob, Mapping):
            raise BadFileError(f"{where} holds a {type(blob).__name__}, not the exported dict with a 'module' state "
                               f"dict; give {EXPECTED}.")
        if "module" in blob and isinstance(blob["module"], Mapping):
            state = blob["module"]
        else:
            state = {k: v for k, v in blob.items() if isinstance(v, torch.Tensor)}
        state = {str(k): v for k, v in _strip_module(state).items() if isinstance(v, torch.Tensor)}
        config, userdata, stats = _json(blob.get("config")), _json(blob.get("userdata")) or {}, _json(blob.get("stats")) or {}
    else:
        raise UserError(f"{where}: unknown VALL-E weights format {suffix!r}; give {EXPECTED} (one of "
                        f"{', '.join(SFT_SUFFIXES + PTH_SUFFIXES)}).")
    if "state_dict" in state or any(k.startswith(("backbone.", "state_dict.")) for k in state) or not state:
        raise BadFileError(f"{where} holds no VALL-E model weights ({len(state)} tensors"
                           + (", a training checkpoint?" if state else "") + f"); give {EXPECTED} (a training "
                           f"checkpoint resumes with ckpt_path=, starts a new run with model.init_from=).")
    if not isinstance(userdata, Mapping) or not isinstance(stats, Mapping) or not (config is None or isinstance(config, Mapping)):
        raise BadFileError(f"{where} has config/userdata/stats entries that are not JSON objects; give {EXPECTED}.")
    return state, config, dict(userdata), dict(stats)


def embedded_config(path: str | Path, trust_pickle: bool = False) -> dict | None:
    """The model config an export carries, read without its tensors (a ``.sft``'s header; a ``.pth`` memory-mapped,
    as data): None when it has none or the file cannot be read here (loading it names the problem)."""
    from audiotrain.safe_files import BadFileError, load_torch, safetensors_metadata

    path = Path(path).expanduser()
    try:
        if path.suffix.lower() in SFT_SUFFIXES:
            config = _json(safetensors_metadata(path, option=None, expected=EXPECTED).get("config"))
        elif path.suffix.lower() in PTH_SUFFIXES:
            blob = load_torch(path, option=None, expected=EXPECTED, trust_pickle=trust_pickle, mmap=True)
            config = _json(blob.get("config")) if isinstance(blob, Mapping) else None
        else:
            return None
    except (BadFileError, UserError, OSError):
        return None
    return dict(config) if isinstance(config, Mapping) else None


def _check_preset(model: ARNAR, preset: str, where: str) -> None:
    """One sentence when the file's model is not the size of ``model.preset`` (the run's config)."""
    from .presets import resolve_config

    want = resolve_config(str(preset))
    keys = ("dim", "heads", "layers", "resp_levels", "audio_tokens")
    got = {k: model.config.get(k) for k in keys if k in want and k in model.config}
    diff = {k: (v, want[k]) for k, v in got.items() if v != want[k]}
    if diff:
        shown = ", ".join(f"{k} {a} vs {b}" for k, (a, b) in sorted(diff.items()))
        raise UserError(f"{where} is a VALL-E model of another size than model.preset={preset} (file vs preset: "
                        f"{shown}): set model.preset to the preset it was trained at, or give weights of {preset}.")


def load_exported(path: str | Path, config: Mapping[str, Any] | str | None = None, trust_pickle: bool = False,
                  device: str | torch.device = "cpu", option: str | None = "model.weights",
                  preset: str | None = None) -> tuple[ARNAR, dict[str, int], dict]:
    """Load an exported ``.sft``/``.pth``: returns (model in eval mode, symmap, embedded config).

    ``config`` overrides the embedded one (needed when the file carries none). Weights stored in
    half precision are loaded into the float32 model. The symmap is ``{}`` when the file has none.
    """
    state, embedded, userdata, _ = read_exported(path, trust_pickle, option)
    where = f"{option}={path}" if option else str(path)
    cfg = config if config is not None else embedded
    if cfg is None:
        raise UserError(f"{where} carries no embedded config: pass model.config=<the vall-e YAML it was trained with, its data/config.yaml> (config= in Python).")
    try:
        with torch.device("meta"):
            model = ARNAR(cfg)
    except (ValueError, TypeError, KeyError) as e:
        raise UserError(f"{where}: cannot build a VALL-E model from its config ({e}); give {EXPECTED}.") from e
    if preset is not None:
        _check_preset(model, preset, where)
    check_state_dict(model, state, where, "the VALL-E model built from its config",  # on meta: nothing allocated
                     "pass config= (a preset name or the model dict) that describes these weights")
    model = model.to_empty(device=device)
    model.load_state_dict(state, strict=True)  # copies: half-precision files load into the float32 model
    symmap = _json(userdata.get("symmap")) or {}
    return model.eval(), dict(symmap), dict(embedded if isinstance(embedded, Mapping) else model.config)


def export_blob(model: ARNAR, symmap: Mapping[str, int] | None = None, config: Mapping[str, Any] | None = None,
                stats: Mapping[str, Any] | None = None, dtype: torch.dtype | None = None) -> dict[str, Any]:
    """The original export dict of ``model``: ``{"module": state dict (plain keys), "stats", "userdata": {"symmap"},
    "config": Model dict}``. Works on a meta-device model too (the names and shapes, nothing allocated)."""
    def tensor(v: torch.Tensor) -> torch.Tensor:
        v = v.detach()
        v = v.to(dtype) if dtype is not None and v.is_floating_point() else v
        return v if v.device.type == "meta" else v.cpu().contiguous()

    return {"module": {k: tensor(v) for k, v in model.state_dict().items()},
            "stats": dict(stats or {}), "userdata": {"symmap": dict(symmap or {})},
            "config": dict(config) if config is not None else to_original_config(model.config)}


def sft_metadata(blob: Mapping[str, Any]) -> dict[str, str]:
    """The safetensors header metadata of an export dict: each non-tensor entry as one JSON string."""
    return {k: json.dumps(v) for k, v in blob.items() if k != "module"}


def save_exported(model: ARNAR, path: str | Path, symmap: Mapping[str, int] | None = None,
                  config: Mapping[str, Any] | None = None, stats: Mapping[str, Any] | None = None,
                  dtype: torch.dtype | None = None) -> Path:
    """Write ``model`` (a plain ARNAR: merge any LoRA first) in the original export layout (:func:`export_blob`).

    The suffix picks the format (``.sft``/``.safetensors`` or ``.pth``/``.pt``). ``config``
    defaults to the original-style dict of ``model.config``; ``dtype`` casts floating tensors.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SFT_SUFFIXES + PTH_SUFFIXES:
        raise UserError(f"{path}: unknown VALL-E weights format {suffix!r}; give a path ending in one of "
                        f"{', '.join(SFT_SUFFIXES + PTH_SUFFIXES)}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = export_blob(model, symmap, config, stats, dtype)
    from audiotrain.atomic_write import atomic_path

    with atomic_path(path) as tmp:  # complete or not at all: a kill or a full disk keeps an earlier file
        if suffix in SFT_SUFFIXES:
            from safetensors.torch import save_file

            save_file(blob["module"], str(tmp), metadata=sft_metadata(blob))
        else:
            with open(tmp, "wb") as fh:
                torch.save(blob, fh)
    return path


def save_merged(backbone: Any, cfg: Any, directory: str | Path) -> Path:
    """``audiotrain merge``'s output for VALL-E: ``<directory>/fp32.sft`` in the original layout, with the
    run's phoneme symmap (that of ``model.weights`` when the run fine-tuned a released model, else the
    built-in one), so ``vall_e --model fp32.sft`` loads it with every weight."""
    from .phonemes import Symmap

    symmap = None
    weights = cfg.model.get("weights")
    if weights:
        symmap = read_exported(weights, bool(cfg.get("trust_pickle", False)))[2].get("symmap")
    symmap = _json(symmap) if symmap else Symmap.builtin().to_dict()
    return save_exported(backbone.adapter_root(), Path(directory) / "fp32.sft", symmap)
