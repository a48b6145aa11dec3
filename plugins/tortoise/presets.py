"""TorToiSe model sizes as plain dicts (spec tortoise.md §1.4, §3.1, §3.4), and how one is resolved with overrides.

The autoregressive model (UnifiedVoice) takes AIVC's DL-Art-School ``unified_voice2`` kwargs, plus the switches
this re-implementation makes explicit::

    layers, model_dim, heads           GPT-2 depth, width, attention heads (n_layer, n_embd, n_head)
    max_text_tokens, max_mel_tokens    longest text / mel-code sequence; the learned position tables have
    max_conditioning_inputs            max_text_tokens + 2 and max_mel_tokens + 2 + max_conditioning_inputs
                                       rows, GPT-2's context is their sum (1012 for the release)
    mel_length_compression             wave samples per mel code (1024: 4 mel frames of hop 256)
    number_text_tokens                 rows of text_embedding / text_head (DLAS's meaning: 256; TorToiSe's
                                       own constructor writes 255 and adds one, the same shape)
    number_mel_codes                   rows of mel_embedding / mel_head: 8192 DVAE codes + start + stop
    start_mel_token, stop_mel_token    8192, 8193
    start_text_token, stop_text_token  255, 0 (0 is also the text padding)
    train_solo_embeddings              DLAS option; only ``False`` (as AIVC) is supported
    use_mel_codes_as_input             DLAS option; only ``True`` (codes, not raw mels) is supported
    checkpointing                      gradient checkpointing of the GPT-2 blocks while training
    tortoise_compat                    152334H's flag (AIVC: true): wav_lengths are multiplied by
                                       mel_length_compression, so the crop and the stop padding are no-ops
    cond_residual                      "tortoise" (the residual of the conditioning encoder's attention blocks
                                       is added to the block input, as TorToiSe runs the model) or "dlas"
                                       (added to the normalised input, as DLAS trains it); spec §3.1
    dropout                            GPT-2's embedding / attention / residual dropout (HF default 0.1)

Presets: ``release`` (the released autoregressive.pth: 30 layers × 1024, 16 heads) and ``tiny`` (CPU tests: 2
layers × 64, 4 heads; the same token ids, vocabulary sizes and maximum lengths, so an 11.6 s clip and a 200-token
text fit and ids are the real ones).

The DVAE (DL-Art-School ``lucidrains_dvae``, dvae.pth) takes ``channels, codebook_dim, hidden_dim, kernel_size,
num_layers, num_resnet_blocks, num_tokens, positional_dims, use_transposed_convs``: ``DVAE_RELEASE`` is AIVC's
``train_diffusion_vocoder_22k_level.yml``; ``DVAE_TINY`` keeps the 80 mel channels, the 4× downsampling and all
8192 codes (so its ids are real ones) with small widths.

:func:`resolve_config` / :func:`resolve_dvae_config` take a preset name or ``{"preset": name, <overrides>}``.
"""
from __future__ import annotations

from typing import Any, Mapping

from audiotrain.models.presets import preset_copy

COND_RESIDUALS = ("tortoise", "dlas")

RELEASE: dict[str, Any] = {
    "layers": 30, "model_dim": 1024, "heads": 16,
    "max_text_tokens": 402, "max_mel_tokens": 604, "max_conditioning_inputs": 2,
    "mel_length_compression": 1024,
    "number_text_tokens": 256, "number_mel_codes": 8194,
    "start_mel_token": 8192, "stop_mel_token": 8193, "start_text_token": 255, "stop_text_token": 0,
    "train_solo_embeddings": False, "use_mel_codes_as_input": True, "checkpointing": True,
    "tortoise_compat": True, "cond_residual": "tortoise", "dropout": 0.1,
}

TINY: dict[str, Any] = {**RELEASE, "layers": 2, "model_dim": 64, "heads": 4, "checkpointing": False}

PRESETS: dict[str, dict[str, Any]] = {"tiny": TINY, "release": RELEASE}

DVAE_RELEASE: dict[str, Any] = {
    "channels": 80, "codebook_dim": 512, "hidden_dim": 512, "kernel_size": 3, "num_layers": 2,
    "num_resnet_blocks": 3, "num_tokens": 8192, "positional_dims": 1, "use_transposed_convs": False,
}

DVAE_TINY: dict[str, Any] = {**DVAE_RELEASE, "codebook_dim": 16, "hidden_dim": 8, "num_resnet_blocks": 1}

DVAE_PRESETS: dict[str, dict[str, Any]] = {"tiny": DVAE_TINY, "release": DVAE_RELEASE}


def get_preset(name: str) -> dict[str, Any]:
    """A copy of UnifiedVoice preset ``name``."""
    return preset_copy(name, PRESETS, "TorToiSe")


def get_dvae_preset(name: str) -> dict[str, Any]:
    """A copy of DVAE preset ``name``."""
    return preset_copy(name, DVAE_PRESETS, "TorToiSe DVAE")


def text_positions(cfg: Mapping[str, Any]) -> int:
    """Rows of ``text_pos_embedding``: max_text_tokens + start + stop."""
    return int(cfg["max_text_tokens"]) + 2


def mel_positions(cfg: Mapping[str, Any]) -> int:
    """Rows of ``mel_pos_embedding``: max_mel_tokens + start + stop + max_conditioning_inputs."""
    return int(cfg["max_mel_tokens"]) + 2 + int(cfg["max_conditioning_inputs"])


def context_length(cfg: Mapping[str, Any]) -> int:
    """GPT-2's n_positions: the longest conditioning + text + mel sequence (1012 for the release)."""
    return text_positions(cfg) + mel_positions(cfg)


def _check_keys(cfg: Mapping[str, Any], reference: Mapping[str, Any], what: str) -> None:
    unknown, missing = sorted(set(cfg) - set(reference)), sorted(set(reference) - set(cfg))
    if unknown or missing:
        raise ValueError(f"{what} config: unknown keys {unknown}, missing keys {missing}")


def validate(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check a resolved UnifiedVoice config (keys, divisibility, token ids, supported options); returns it."""
    _check_keys(cfg, RELEASE, "TorToiSe UnifiedVoice")
    if cfg["model_dim"] % cfg["heads"]:
        raise ValueError(f"model_dim {cfg['model_dim']} is not divisible by heads {cfg['heads']}")
    for key in ("start_text_token", "stop_text_token"):
        if not 0 <= int(cfg[key]) < int(cfg["number_text_tokens"]):
            raise ValueError(f"{key}={cfg[key]} is outside the {cfg['number_text_tokens']} text tokens")
    for key in ("start_mel_token", "stop_mel_token"):
        if not 0 <= int(cfg[key]) < int(cfg["number_mel_codes"]):
            raise ValueError(f"{key}={cfg[key]} is outside the {cfg['number_mel_codes']} mel codes")
    if cfg["cond_residual"] not in COND_RESIDUALS:
        raise ValueError(f"cond_residual={cfg['cond_residual']!r} is unknown; use one of {COND_RESIDUALS}")
    if cfg["train_solo_embeddings"]:
        raise ValueError("train_solo_embeddings=true is not supported; AIVC trains with train_solo_embeddings=false")
    if not cfg["use_mel_codes_as_input"]:
        raise ValueError("use_mel_codes_as_input=false (raw mels as input) is not supported; AIVC feeds DVAE codes")
    return cfg


def validate_dvae(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check a resolved DVAE config; returns it."""
    _check_keys(cfg, DVAE_RELEASE, "TorToiSe DVAE")
    if cfg["positional_dims"] != 1 or cfg["use_transposed_convs"]:
        raise ValueError("only the 1-D DVAE with upsampling convolutions (positional_dims=1, "
                         "use_transposed_convs=false) is supported, as dvae.pth is")
    if cfg["num_layers"] < 1 or cfg["num_resnet_blocks"] < 1:
        raise ValueError("the DVAE needs num_layers >= 1 and num_resnet_blocks >= 1 (dvae.pth has 2 and 3)")
    return cfg


def _resolve(cfg: str | Mapping[str, Any], overrides: Mapping[str, Any] | None, default: str,
             get: Any) -> dict[str, Any]:
    if isinstance(cfg, str):
        cfg = {"preset": cfg}
    cfg = dict(cfg)
    out = get(str(cfg.pop("preset", default)))
    out.update(cfg)
    out.update(dict(overrides or {}))
    return out


def resolve_config(cfg: str | Mapping[str, Any] = "release",
                   overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A validated UnifiedVoice config from a preset name or ``{"preset": name, ...}`` (default ``release``)."""
    return validate(_resolve(cfg, overrides, "release", get_preset))


def resolve_dvae_config(cfg: str | Mapping[str, Any] = "release",
                        overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A validated DVAE config from a preset name or ``{"preset": name, ...}`` (default ``release``)."""
    return validate_dvae(_resolve(cfg, overrides, "release", get_dvae_preset))
