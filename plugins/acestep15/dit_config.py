"""The ACE-Step 1.5 DiT configuration (``AceStepConfig``'s fields, the released defaults) and its presets.

Field names are the keys of a released variant's ``config.json``, so a folder's config maps onto
:class:`DiTConfig` one to one (:func:`config_from_json`). The defaults are the released 2B values; the XL
variants add the four ``encoder_*`` sizes (the condition encoder, FSQ tokenizer and detokenizer keep the 2B
widths, the decoder is wider).

Two derived switches that the released config does not spell out:

- ``layer_types`` (``None``): even layers ``sliding_attention``, odd layers ``full_attention``. Every stack
  (decoder, lyric/timbre encoders, pooler, detokenizer) takes the type of its own layer index.
- ``timbre_prepend_cls`` (``None``): whether the timbre encoder prepends its ``special_token`` (the XL code
  does, the 2B code has the prepend commented out). ``None`` decides from the config: an XL config, the one
  with ``encoder_hidden_size`` set, prepends.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from audiotrain.errors import UserError
from audiotrain.models.presets import require_preset

SLIDING = "sliding_attention"
FULL = "full_attention"


@dataclass
class DiTConfig:
    # decoder sizes
    hidden_size: int = 2048
    intermediate_size: int = 6144
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int = 128
    # attention / norm
    hidden_act: str = "silu"
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    max_position_embeddings: int = 32768
    use_sliding_window: bool = True
    sliding_window: int = 128
    attention_bias: bool = False
    attention_dropout: float = 0.0
    layer_types: list[str] | None = None
    # latent path
    in_channels: int = 192
    audio_acoustic_hidden_dim: int = 64
    patch_size: int = 2
    pool_window_size: int = 5
    # condition path
    text_hidden_dim: int = 1024
    timbre_hidden_dim: int = 64
    timbre_fix_frame: int = 750
    num_lyric_encoder_hidden_layers: int = 8
    num_timbre_encoder_hidden_layers: int = 4
    num_attention_pooler_hidden_layers: int = 2
    num_audio_decoder_hidden_layers: int = 24  # in the released config; the decoder depth is num_hidden_layers
    # FSQ
    fsq_dim: int = 2048
    fsq_input_levels: list[int] = field(default_factory=lambda: [8, 8, 8, 5, 5, 5])
    fsq_input_num_quantizers: int = 1
    # misc (vocab_size is unused by the DiT; mu/sigma are the training timestep law)
    vocab_size: int = 64003
    timestep_mu: float = -0.4
    timestep_sigma: float = 1.0
    data_proportion: float = 0.5
    model_version: str = "turbo"
    # XL: the condition encoder / tokenizer / detokenizer sizes when they differ from the decoder's
    encoder_hidden_size: int | None = None
    encoder_intermediate_size: int | None = None
    encoder_num_attention_heads: int | None = None
    encoder_num_key_value_heads: int | None = None
    timbre_prepend_cls: bool | None = None

    def __post_init__(self) -> None:
        if self.layer_types is None:
            self.layer_types = [SLIDING if i % 2 == 0 else FULL for i in range(self.num_hidden_layers)]
        if self.timbre_prepend_cls is None:
            self.timbre_prepend_cls = self.encoder_hidden_size is not None
        bad = [t for t in self.layer_types if t not in (SLIDING, FULL)]
        if bad:
            raise UserError(f"layer_types holds {bad[0]!r}: use {SLIDING!r} or {FULL!r}.")
        if self.audio_acoustic_hidden_dim * 3 != self.in_channels:
            raise UserError(f"in_channels={self.in_channels} must be 3 x audio_acoustic_hidden_dim="
                            f"{self.audio_acoustic_hidden_dim} (context latents + chunk masks + xt).")
        for heads, kv in ((self.num_attention_heads, self.num_key_value_heads),
                          (self.enc_heads, self.enc_kv_heads)):
            if heads % kv:
                raise UserError(f"num_attention_heads={heads} is not a multiple of num_key_value_heads={kv}.")

    # the sizes every non-decoder part uses
    @property
    def enc_hidden(self) -> int:
        return self.encoder_hidden_size or self.hidden_size

    @property
    def enc_intermediate(self) -> int:
        return self.encoder_intermediate_size or self.intermediate_size

    @property
    def enc_heads(self) -> int:
        return self.encoder_num_attention_heads or self.num_attention_heads

    @property
    def enc_kv_heads(self) -> int:
        return self.encoder_num_key_value_heads or self.num_key_value_heads

    def layer_type(self, index: int) -> str:
        """The attention type of layer ``index`` of any stack (the pattern repeats past the listed layers)."""
        types = self.layer_types or [SLIDING, FULL]
        return types[index % len(types)] if index >= len(types) else types[index]

    def window_of(self, index: int) -> int | None:
        """The bidirectional window ``|i - j| <= w`` of layer ``index``, or None for full attention."""
        if self.use_sliding_window and self.layer_type(index) == SLIDING:
            return int(self.sliding_window)
        return None

    def to_json(self) -> dict[str, Any]:
        """The fields as a released ``config.json`` holds them (``timbre_prepend_cls`` only when not derived)."""
        out = dataclasses.asdict(self)
        if out["timbre_prepend_cls"] == (self.encoder_hidden_size is not None):
            out.pop("timbre_prepend_cls")
        for k in ("encoder_hidden_size", "encoder_intermediate_size", "encoder_num_attention_heads",
                  "encoder_num_key_value_heads"):
            if out[k] is None:
                out.pop(k)
        return out


FIELDS = {f.name for f in dataclasses.fields(DiTConfig)}

_XL = dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=32, num_attention_heads=32,
           num_key_value_heads=8, head_dim=128, encoder_hidden_size=2048, encoder_intermediate_size=6144,
           encoder_num_attention_heads=16, encoder_num_key_value_heads=8)

#: model.preset -> DiTConfig overrides; ``tiny`` trains on a CPU in seconds (random weights).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, sliding_window=4, max_position_embeddings=4096,
                 text_hidden_dim=32, num_lyric_encoder_hidden_layers=2, num_timbre_encoder_hidden_layers=1,
                 num_attention_pooler_hidden_layers=1, num_audio_decoder_hidden_layers=2, fsq_dim=64,
                 model_version="tiny"),
    "turbo": dict(model_version="turbo"),
    "base": dict(model_version="base"),
    "sft": dict(model_version="sft"),
    "xl-base": dict(_XL, model_version="xl_base"),
    "xl-sft": dict(_XL, model_version="xl_sft"),
    "xl-turbo": dict(_XL, model_version="xl_turbo"),
}


def preset_config(name: str, **overrides: Any) -> DiTConfig:
    """The :class:`DiTConfig` of preset ``name`` with ``overrides``; an unknown name or field is one sentence."""
    name = require_preset(name, PRESETS)
    return config_from_json({**PRESETS[name], **overrides}, source=f"model.preset={name}", strict=True)


def config_from_json(data: Mapping[str, Any], *, source: str, strict: bool = False) -> DiTConfig:
    """A :class:`DiTConfig` from a ``config.json`` mapping. Keys the DiT does not use (``architectures``,
    ``auto_map``, ``torch_dtype`` ...) are ignored unless ``strict``; a wrong type is one sentence."""
    unknown = sorted(k for k in data if k not in FIELDS)
    if strict and unknown:
        raise UserError(f"{source}: {', '.join(unknown[:3])} is not a DiT setting; use one of the DiTConfig "
                        f"fields (e.g. hidden_size, num_hidden_layers).")
    kwargs = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in data.items() if k in FIELDS}
    try:
        return DiTConfig(**kwargs)
    except TypeError as exc:
        raise UserError(f"{source}: {exc}; give the config.json of an ACE-Step 1.5 DiT folder.") from exc
