"""SongGen model sizes as plain dicts (spec songgen.md §3), and how one is resolved with overrides.

A *resolved* config has exactly the keys of :data:`MIXED_PRO` (nested groups included)::

    prompt_vocab_size        rows of embed_prompts (config.json's top-level ``vocab_size``, 7000)
    prompt_cross_attention   lyrics go into the cross-attention memory (only ``true`` is supported)
    add_prenet               run the lyrics Conformer (false: embed_prompts -> lyrics_to_dec_proj)
    decoder                  SongGenDecoderConfig fields: vocab_size, hidden_size, num_hidden_layers,
                             num_attention_heads, ffn_dim, max_position_embeddings, num_codebooks, dropout,
                             attention_dropout, activation_dropout, initializer_factor, pad/eos/bos_token_id,
                             track_pattern, add_vocal_loss
    text_encoder             a transformers T5Config dict (the encoder of flan-t5-large for the releases)
    lyrics_encoder           the Conformer's attention_heads, linear_units, num_blocks and dropouts (its
                             input and output width is decoder.hidden_size)
    mert                     hidden_size (width of the MERT hidden states) and num_layers (stacked states, 25)

Presets: ``mixed_pro`` (the released SongGen_mixed_pro: hidden 1024, 24 layers, 16 heads, ffn 4096, 6547
positions, 8 codebooks, vocal heads), ``interleaving_A_V`` (the same weights without the vocal heads, track
pattern interleaving_A_V) and ``tiny`` (CPU tests: hidden 32, 2 layers, 2 heads; the real 1088-token vocabulary
and 8 streams so token ids are the real ones; a 1-layer T5 of width 16 over 384 ids; a 2-block Conformer; MERT
width 16 over 25 layers).

:func:`resolve_config` takes a preset name or a dict ``{"preset": name, <overrides>}`` whose nested groups are
merged key by key over the preset (``{"preset": "tiny", "decoder": {"num_hidden_layers": 1}}``).
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

from audiotrain.models.presets import preset_copy

TRACK_PATTERNS = ("mixed", "mixed_pro", "interleaving_A_V", "interleaving_V_A", "parallel_std", "parallel_A_V",
                  "parallel_V_A")

#: google/flan-t5-large's encoder architecture (the composite reference config's ``text_encoder``).
FLAN_T5_LARGE: dict[str, Any] = {
    "vocab_size": 32128, "d_model": 1024, "d_kv": 64, "d_ff": 2816, "num_layers": 24, "num_heads": 16,
    "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128, "dropout_rate": 0.1,
    "layer_norm_epsilon": 1e-6, "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False,
    "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0,
}

MIXED_PRO: dict[str, Any] = {
    "prompt_vocab_size": 7000,
    "prompt_cross_attention": True,
    "add_prenet": True,
    "decoder": {
        "vocab_size": 1088, "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
        "ffn_dim": 4096, "max_position_embeddings": 6547, "num_codebooks": 8, "dropout": 0.1,
        "attention_dropout": 0.0, "activation_dropout": 0.0, "initializer_factor": 0.02,
        "pad_token_id": 1024, "eos_token_id": 1024, "bos_token_id": 1025,
        "track_pattern": "mixed_pro", "add_vocal_loss": True,
    },
    "text_encoder": FLAN_T5_LARGE,
    "lyrics_encoder": {"attention_heads": 16, "linear_units": 4096, "num_blocks": 6, "dropout_rate": 0.1,
                       "positional_dropout_rate": 0.1, "attention_dropout_rate": 0.0},
    "mert": {"hidden_size": 1024, "num_layers": 25},
}

INTERLEAVING_A_V: dict[str, Any] = {
    **MIXED_PRO,
    "decoder": {**MIXED_PRO["decoder"], "track_pattern": "interleaving_A_V", "add_vocal_loss": False},
}

TINY: dict[str, Any] = {
    "prompt_vocab_size": 7000,
    "prompt_cross_attention": True,
    "add_prenet": True,
    "decoder": {
        **MIXED_PRO["decoder"], "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "ffn_dim": 64,
        "max_position_embeddings": 6547,  # as released: a 30 s song fits every pattern
    },
    "text_encoder": {**FLAN_T5_LARGE, "vocab_size": 384, "d_model": 16, "d_kv": 8, "d_ff": 32, "num_layers": 1,
                     "num_heads": 2},
    "lyrics_encoder": {**MIXED_PRO["lyrics_encoder"], "attention_heads": 2, "linear_units": 64, "num_blocks": 2},
    "mert": {"hidden_size": 16, "num_layers": 25},
}

PRESETS: dict[str, dict[str, Any]] = {"tiny": TINY, "mixed_pro": MIXED_PRO, "interleaving_A_V": INTERLEAVING_A_V}

GROUPS = ("decoder", "text_encoder", "lyrics_encoder", "mert")


def get_preset(name: str) -> dict[str, Any]:
    """A deep copy of preset ``name``."""
    return preset_copy(name, PRESETS, "SongGen")


def num_streams(cfg: Mapping[str, Any]) -> int:
    """Token streams of the decoder: ``num_codebooks``, doubled by the parallel dual-track patterns."""
    dec = cfg["decoder"]
    return int(dec["num_codebooks"]) * (2 if str(dec["track_pattern"]).startswith("parallel") else 1)


def validate(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check a resolved config (unknown keys, divisibility, supported options); returns it."""
    unknown = sorted(set(cfg) - set(MIXED_PRO))
    missing = sorted(set(MIXED_PRO) - set(cfg))
    for group in ("decoder", "lyrics_encoder", "mert"):
        if isinstance(cfg.get(group), Mapping):
            unknown += [f"{group}.{k}" for k in sorted(set(cfg[group]) - set(MIXED_PRO[group]))]
            missing += [f"{group}.{k}" for k in sorted(set(MIXED_PRO[group]) - set(cfg[group]))]
    if unknown or missing:
        raise ValueError(f"SongGen model config: unknown keys {unknown}, missing keys {missing}")
    dec = cfg["decoder"]
    if dec["hidden_size"] % dec["num_attention_heads"]:
        raise ValueError(f"decoder.hidden_size {dec['hidden_size']} is not divisible by num_attention_heads "
                         f"{dec['num_attention_heads']}")
    if cfg["add_prenet"] and dec["hidden_size"] % cfg["lyrics_encoder"]["attention_heads"]:
        raise ValueError(f"decoder.hidden_size {dec['hidden_size']} is not divisible by lyrics_encoder."
                         f"attention_heads {cfg['lyrics_encoder']['attention_heads']}")
    if dec["track_pattern"] not in TRACK_PATTERNS:
        raise ValueError(f"decoder.track_pattern={dec['track_pattern']!r} is unknown; use one of {TRACK_PATTERNS}")
    if not cfg["prompt_cross_attention"]:
        raise ValueError("prompt_cross_attention=false (lyrics prepended to the decoder input) is not supported; "
                         "every released SongGen config uses prompt_cross_attention=true")
    return cfg


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in over.items():
        if key in GROUPS and isinstance(value, Mapping) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **copy.deepcopy(dict(value))}
        else:
            base[key] = copy.deepcopy(value)
    return base


def resolve_config(cfg: str | Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A validated config from a preset name or ``{"preset": name, ...}`` (default ``mixed_pro``), with
    ``overrides`` (same shape) merged over it group by group."""
    if isinstance(cfg, str):
        cfg = {"preset": cfg}
    cfg = dict(cfg)
    out = _merge(get_preset(str(cfg.pop("preset", "mixed_pro"))), cfg)
    return validate(_merge(out, overrides or {}))
