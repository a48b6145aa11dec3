"""VALL-E v5 AR+NAR sizes (spec valle.md §1.1) and the config translation for exported weights.

A *resolved* config is a flat dict with exactly the keys of :data:`DEFAULTS`; :class:`ARNAR`
is built from it. :func:`resolve_config` accepts a preset name, a partial flat dict (optionally
with ``"preset": name`` as its base) or the original project's ``Model`` dict as embedded in
exported ``fp32.sft``/``.pth`` files (``size`` as name/float/dict plus an ``experimental`` dict).
:func:`to_original_config` writes the latter form back (``size`` as a dict, so every size is kept).

Presets: ``quarter`` 256 d / 4 heads / 12 layers, ``half`` 512/8/12, ``full`` 1024/16/12 (the
released ``ar+nar-llama-8``, 237,968,641 parameters), and ``tiny`` 32 d / 2 heads / 2 layers (no
dropout) for CPU tests, sized for ``Codec.tiny`` (8 levels x 64 codes; the others keep EnCodec's
8 x 1024). ``resp_levels`` and ``audio_tokens`` are keys of every preset, so a model can match any
codec (e.g. ``{"preset": "tiny", "audio_tokens": 1024}`` for real EnCodec codes, or
``{"preset": "tiny", "resp_levels": 2}``); the AR table and head have ``audio_tokens + 1`` rows
(the last is the stop token).
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

from audiotrain.models.presets import preset_copy

#: Every key of a resolved config, with the released ``ar+nar-llama-8`` values (data/config.yaml).
DEFAULTS: dict[str, Any] = {
    "name": "ar+nar",
    "version": 5,
    "dim": 1024,
    "heads": 16,
    "layers": 12,
    "ffn_mult": 4,
    "resp_levels": 8,
    "audio_tokens": 1024,
    "phoneme_tokens": 256,
    "text_tokens": 8575,
    "tasks": 9,
    "langs": 4,
    "tones": 1,
    "len_tokens": 11,
    "max_position_embeddings": 22750,
    "dropout": 0.1,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "capabilities": ["ar", "nar"],
    "audio_embedding_sums": True,
    "split_classifiers": True,
    "unified_position_ids": False,
    "classifiers_bias": True,
    "rvq_levels_p": "auto",
}

#: Named sizes of the original project (dim, heads, layers).
SIZES: dict[str, dict[str, int]] = {
    "quarter": {"dim": 256, "heads": 4, "layers": 12},
    "half": {"dim": 512, "heads": 8, "layers": 12},
    "full": {"dim": 1024, "heads": 16, "layers": 12},
    "extended": {"dim": 1024, "heads": 16, "layers": 16},
    "double": {"dim": 1024, "heads": 16, "layers": 24},
}

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {**DEFAULTS, "dim": 32, "heads": 2, "layers": 2, "audio_tokens": 64, "dropout": 0.0},
    "quarter": {**DEFAULTS, **SIZES["quarter"]},
    "half": {**DEFAULTS, **SIZES["half"]},
    "full": {**DEFAULTS, **SIZES["full"]},
}

# Original ModelExperimentalSettings defaults for the flags we read (they differ from the yaml).
_EXPERIMENTAL_DEFAULTS = {
    "audio_embedding_sums": False,
    "split_classifiers": False,
    "unified_position_ids": True,
    "classifiers_bias": True,
    "max_position_embeddings": 70 * 65 * 5,
    "rvq_levels_p": "auto",
}
_SIZE_DICT_KEYS = {"dim": "dim", "heads": "heads", "layers": "layers", "ffn": "ffn_mult", "resp_levels": "resp_levels",
                   "audio_tokens": "audio_tokens", "text_tokens": "text_tokens", "phoneme_tokens": "phoneme_tokens"}


def get_preset(name: str) -> dict[str, Any]:
    """A deep copy of preset ``name``."""
    return preset_copy(name, PRESETS, "VALL-E")


def _is_original(cfg: Mapping[str, Any]) -> bool:
    return "experimental" in cfg or "size" in cfg or "arch_type" in cfg


def _from_original(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Translate the original ``Model`` dict (+ optional top-level ``audio_backend``)."""
    if int(cfg.get("version", 5)) >= 7:
        raise ValueError(f"model version {cfg.get('version')} is the v2 architecture (ar_nar_v2); only version < 7 is supported")
    if cfg.get("arch_type", "llama") != "llama":
        raise ValueError(f"arch_type {cfg.get('arch_type')!r} is not supported; only 'llama'")
    if int(cfg.get("experts", 1)) > 1:
        raise ValueError(f"mixture-of-experts models (experts={cfg.get('experts')}) are not supported")
    out = dict(DEFAULTS)
    backend = str(cfg.get("audio_backend", "")).lower()
    out["resp_levels"] = 9 if backend == "dac" else 8
    out["audio_tokens"] = 1000 if backend == "nemo" else 1024
    size = cfg.get("size", "full")
    if isinstance(size, str):
        if size not in SIZES:
            raise ValueError(f"unknown model size {size!r}; known: {sorted(SIZES)}")
        out.update(SIZES[size])
    elif isinstance(size, (int, float)):
        out.update(dim=int(1024 * size), heads=int(16 * size), layers=12)
    elif isinstance(size, Mapping):
        out.update(SIZES["full"])
        out.update({_SIZE_DICT_KEYS[k]: v for k, v in size.items() if k in _SIZE_DICT_KEYS})
    for key, default in (("tasks", 8), ("langs", 1), ("tones", 1), ("dropout", 0.1)):
        out[key] = cfg.get(key, default)
    caps = [c for c in cfg.get("capabilities", ["ar", "nar"]) if c != "lang"]
    out["capabilities"] = caps
    out["name"], out["version"] = cfg.get("name", "ar+nar"), int(cfg.get("version", 5))
    exp = {**_EXPERIMENTAL_DEFAULTS, **dict(cfg.get("experimental") or {})}
    for flag in ("kv_heads", "interleave", "hf", "tie_classifier_to_embedding"):
        if exp.get(flag):
            raise ValueError(f"experimental.{flag}={exp[flag]!r} is not supported by this re-implementation")
    for key in ("audio_embedding_sums", "split_classifiers", "unified_position_ids", "classifiers_bias",
                "max_position_embeddings", "rvq_levels_p"):
        out[key] = exp[key]
    return out


def validate(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check a resolved config; returns it."""
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown VALL-E model keys {unknown}; known: {sorted(DEFAULTS)}")
    if not cfg["split_classifiers"]:
        raise ValueError("split_classifiers=False (one 17702-way head) is not supported; the released models use split classifiers")
    if cfg["dim"] % cfg["heads"]:
        raise ValueError(f"dim {cfg['dim']} is not divisible by heads {cfg['heads']}")
    if cfg["resp_levels"] < 1 or cfg["audio_tokens"] < 2:
        raise ValueError(f"need resp_levels >= 1 and audio_tokens >= 2, got {cfg['resp_levels']} and {cfg['audio_tokens']}")
    p = cfg["rvq_levels_p"]
    if not (p in ("auto", "equal") or (isinstance(p, (list, tuple)) and p and all(0 <= int(i) < cfg["resp_levels"] for i in p))):
        raise ValueError(f"rvq_levels_p must be 'auto', 'equal' or a non-empty list of levels < {cfg['resp_levels']}, got {p!r}")
    return cfg


def resolve_config(cfg: str | Mapping[str, Any]) -> dict[str, Any]:
    """A resolved flat config from a preset name, a partial flat dict or an original ``Model`` dict."""
    if isinstance(cfg, str):
        return validate(get_preset(cfg))
    if _is_original(cfg):
        return validate(_from_original(cfg))
    cfg = dict(cfg)
    out = get_preset(cfg.pop("preset", "full"))
    out.update(copy.deepcopy(cfg))
    out["capabilities"] = list(out["capabilities"])
    return validate(out)


def to_original_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The original project's ``Model`` dict for a resolved config (``size`` as a dict)."""
    cfg = validate(dict(cfg))
    size = {k: cfg[v] for k, v in _SIZE_DICT_KEYS.items()}
    experimental = {k: cfg[k] for k in _EXPERIMENTAL_DEFAULTS}
    return {
        "name": cfg["name"], "version": cfg["version"], "size": size, "tasks": cfg["tasks"], "langs": cfg["langs"],
        "tones": cfg["tones"], "experts": 1, "arch_type": "llama", "dropout": cfg["dropout"],
        "capabilities": [*cfg["capabilities"], "lang"] if "lang" not in cfg["capabilities"] else list(cfg["capabilities"]),
        "experimental": experimental,
    }
