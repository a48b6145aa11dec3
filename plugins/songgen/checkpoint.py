"""SongGen checkpoint folders: the released ``LiuZH-19/SongGen_*`` layout read as data, and written back.

A folder holds ``config.json`` (SongGenConfig: top-level ``vocab_size`` (embed_prompts rows),
``prompt_cross_attention``, ``add_prenet``, ``text_encoder`` {T5 config}, ``decoder`` {SongGenDecoderConfig}) and
``model.safetensors`` (or ``model.safetensors.index.json`` + shards) with the composite's keys.

- :func:`preset_from_config_json` maps config.json to a resolved preset dict (presets.py); options this
  re-implementation does not have (RoPE, GQA, another activation, layerdrop, scaled embeddings, lyrics
  prepended to the decoder input) are refused with one sentence. The Conformer and MERT sizes are not in the
  original's config (its code fixes them): they come from the ``audiotrain`` entry when present (written by
  :func:`config_json`), else the released values.
- :func:`load_folder` builds the composite on the meta device, reads the weights with
  :mod:`audiotrain.safe_files` (safetensors only: never pickle, never remote code), ignores the external frozen
  encoders' keys (``audio_encoder.*``, ``mert_model.*``; counted in the result), accepts either name of the tied
  T5 embedding, and refuses any other missing, unexpected or mis-shaped key with one sentence
  (:func:`audiotrain.models.state_dict.check_state_dict`).
- :func:`config_json` writes the same config.json layout (readable by the original's
  ``SongGenConfig.from_pretrained``), :func:`save_folder` config.json + ``model.safetensors`` (the tied T5
  embedding stored once, as ``text_encoder.shared.weight``, as ``save_pretrained`` does).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from audiotrain.errors import UserError
from audiotrain.models.state_dict import check_state_dict
from audiotrain.safe_files import BadFileError, check_file, load_safetensors, read_json, where

from .composite import EXTERNAL_PREFIXES, TIED_KEYS, SongGenComposite
from .presets import FLAN_T5_LARGE, MIXED_PRO, validate

EXPECTED = "a SongGen checkpoint folder (config.json + model.safetensors, e.g. a local copy of LiuZH-19/SongGen_mixed_pro)"
#: decoder fields read from / written to config.json, with the value used when the file lacks one
_DECODER_DEFAULTS = {"dropout": 0.1, "attention_dropout": 0.0, "activation_dropout": 0.0, "initializer_factor": 0.02,
                     "pad_token_id": 1024, "eos_token_id": 1024, "bos_token_id": 1025, "track_pattern": "mixed_pro",
                     "add_vocal_loss": False}
_DECODER_REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "ffn_dim",
                     "max_position_embeddings", "num_codebooks")


class ConfigError(UserError):
    """A config.json this re-implementation cannot build a model from."""


@dataclass
class LoadedFolder:
    """What :func:`load_folder` returns: the model, its resolved config, the external keys it ignored."""

    model: SongGenComposite
    config: dict[str, Any]
    ignored: list[str] = field(default_factory=list)


def _unsupported(shown: str, what: str) -> ConfigError:
    return ConfigError(f"{shown}: {what} is not supported by this re-implementation; pass {EXPECTED}.")


def preset_from_config_json(data: Mapping[str, Any], *, source: str = "config.json") -> dict[str, Any]:
    """A resolved preset dict from a SongGen config.json's contents (``source`` names the file in messages)."""
    from transformers import T5Config

    if not isinstance(data, Mapping) or not isinstance(data.get("decoder"), Mapping) \
            or not isinstance(data.get("text_encoder"), Mapping):
        raise ConfigError(f"{source} is not a SongGen config (it needs the text_encoder and decoder entries); "
                          f"pass {EXPECTED}.")
    if data.get("model_type", "songgen") != "songgen":
        raise ConfigError(f"{source} describes a {data.get('model_type')} model, not songgen; pass {EXPECTED}.")
    dec_in = dict(data["decoder"])
    lacks = [k for k in _DECODER_REQUIRED if k not in dec_in]
    if lacks:
        raise ConfigError(f"{source}: decoder lacks {', '.join(lacks)}; pass {EXPECTED}.")
    heads = int(dec_in["num_attention_heads"])
    checks = [
        (str(dec_in.get("activation_function", "gelu")) != "gelu", f"decoder.activation_function="
         f"{dec_in.get('activation_function')}"),
        (bool(dec_in.get("rope_embeddings", False)), "decoder.rope_embeddings=true"),
        (bool(dec_in.get("scale_embedding", False)), "decoder.scale_embedding=true"),
        (float(dec_in.get("layerdrop", 0.0) or 0.0) != 0.0, f"decoder.layerdrop={dec_in.get('layerdrop')}"),
        (int(dec_in.get("num_key_value_heads") or heads) != heads, "grouped key/value heads (num_key_value_heads)"),
        (int(dec_in.get("num_cross_attention_key_value_heads") or heads) != heads,
         "grouped cross-attention key/value heads"),
        (not bool(data.get("prompt_cross_attention", True)), "prompt_cross_attention=false"),
    ]
    for bad, what in checks:
        if bad:
            raise _unsupported(source, what)
    dec = {k: dec_in[k] for k in _DECODER_REQUIRED}
    dec.update({k: d if dec_in.get(k) is None else dec_in[k] for k, d in _DECODER_DEFAULTS.items()})
    given = dict(data["text_encoder"])
    defaults = T5Config()  # what the original's T5Config gives a key the file lacks
    text = {k: given[k] if k in given else getattr(defaults, k, FLAN_T5_LARGE[k]) for k in FLAN_T5_LARGE}
    extra = data.get("audiotrain") if isinstance(data.get("audiotrain"), Mapping) else {}
    cfg = {
        "prompt_vocab_size": int(data.get("vocab_size", MIXED_PRO["prompt_vocab_size"])),
        "prompt_cross_attention": True,
        "add_prenet": bool(data.get("add_prenet", True)),
        "decoder": dec,
        "text_encoder": text,
        "lyrics_encoder": {**MIXED_PRO["lyrics_encoder"], **dict(extra.get("lyrics_encoder") or {})},
        "mert": {**MIXED_PRO["mert"], **dict(extra.get("mert") or {})},
    }
    try:
        return validate(cfg)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}; pass {EXPECTED}.") from None


def config_json(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The config.json contents for a resolved config, in SongGenConfig's layout."""
    cfg = validate(json.loads(json.dumps(model_cfg)))
    dec = cfg["decoder"]
    dual = not str(dec["track_pattern"]).startswith("mixed")
    heads = int(dec["num_attention_heads"])
    decoder = {**dec, "model_type": "songgen_decoder", "activation_function": "gelu", "layerdrop": 0.0,
               "num_key_value_heads": heads, "num_cross_attention_key_value_heads": heads, "scale_embedding": False,
               "rope_embeddings": False, "rope_theta": 10000.0, "use_cache": True,
               "cross_attention_implementation_strategy": None}
    return {
        "model_type": "songgen",
        "architectures": ["SongGenDualTrackForConditionalGeneration" if dual else "SongGenMixedForConditionalGeneration"],
        "is_encoder_decoder": True,
        "vocab_size": cfg["prompt_vocab_size"],
        "prompt_cross_attention": cfg["prompt_cross_attention"],
        "add_prenet": cfg["add_prenet"],
        "pad_token_id": dec["pad_token_id"],
        "decoder_start_token_id": dec["bos_token_id"],
        "text_encoder": {**cfg["text_encoder"], "model_type": "t5"},
        "decoder": decoder,
        "audiotrain": {"lyrics_encoder": cfg["lyrics_encoder"], "mert": cfg["mert"]},
    }


def _weight_files(folder: Path, option: str | None) -> list[Path]:
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        data = read_json(index, option=option, expected=EXPECTED)
        files = sorted(set((data.get("weight_map") or {}).values())) if isinstance(data, Mapping) else []
        if not files:
            raise BadFileError(f"{where(option, index)} names no weight files; pass {EXPECTED}.")
        return [check_file(folder / f, option=option, expected=EXPECTED) for f in files]
    kind = "pytorch_model.bin (pickle, not read)" if any(folder.glob("pytorch_model*.bin")) else "no weights"
    raise BadFileError(f"{where(option, folder)} holds {kind}: it needs model.safetensors or "
                       f"model.safetensors.index.json; pass {EXPECTED}.")


def read_folder_state(path: str | Path, *, option: str | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(config.json contents, every tensor of the folder's safetensors)``, read as data."""
    folder = Path(str(path)).expanduser()
    if not folder.is_dir():
        raise BadFileError(f"{where(option, folder)} is not a folder; pass {EXPECTED}.")
    data = read_json(folder / "config.json", option=option, expected=EXPECTED)
    state: dict[str, torch.Tensor] = {}
    for f in _weight_files(folder, option):
        state.update(load_safetensors(f, option=option, expected=EXPECTED))
    return data, state


def load_folder(path: str | Path, *, option: str | None = None, dtype: torch.dtype | None = None,
                freeze_text_encoder: bool = True) -> LoadedFolder:
    """The composite of a checkpoint folder, weights loaded strictly (see the module doc), on the CPU."""
    folder = Path(str(path)).expanduser()
    data, state = read_folder_state(folder, option=option)
    cfg = preset_from_config_json(data, source=where(option, folder / "config.json"))
    ignored = sorted(k for k in state if k.startswith(EXTERNAL_PREFIXES))
    state = {k: v for k, v in state.items() if not k.startswith(EXTERNAL_PREFIXES)}
    present = [k for k in TIED_KEYS if k in state]
    if present:
        for k in TIED_KEYS:
            state.setdefault(k, state[present[0]])
    with torch.device("meta"):
        model = SongGenComposite(cfg, freeze_text_encoder=freeze_text_encoder)
    name = "model.safetensors" if (folder / "model.safetensors").is_file() else "model.safetensors.index.json"
    check_state_dict(model, state, where(option, folder / name), "the SongGen model its config.json describes",
                     "pass the config.json and weights of one checkpoint (a released SongGen folder or one "
                     "saved by audiotrain)")
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()
    if dtype is not None:
        model.to(dtype)
    model.train(False)
    return LoadedFolder(model, cfg, ignored)


def save_folder(model: SongGenComposite, directory: str | Path) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (the composite's keys) into ``directory``; each file
    complete or not at all. Returns the folder."""
    from safetensors.torch import save_file

    from audiotrain.atomic_write import atomic_path

    folder = Path(str(directory)).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k != TIED_KEYS[1]}
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    with atomic_path(folder / "config.json") as tmp:
        tmp.write_text(json.dumps(config_json(model.cfg), indent=2) + "\n", encoding="utf-8")
    return folder
