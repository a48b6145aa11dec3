"""Architecture presets for :class:`audiotrain_acestep.transformer.ACEStepTransformer2DModel`.

``v1-3.5b`` is the released ``ace_step_transformer/config.json`` (3,305,659,264 parameters);
``tiny`` is a CPU-test model with the same module names (every key of ``tiny``, with block
indices abstracted, is a key of ``v1-3.5b``).

Optional keys understood by the model beyond the released config (defaults match the release):
``lyric_num_blocks`` (6), ``lyric_attention_heads`` (16), ``lyric_linear_units`` (4096),
``ssl_projector_dim`` (2 * inner_dim).
"""
from __future__ import annotations

from typing import Any

from audiotrain.models.presets import preset_copy

V1_3_5B: dict[str, Any] = {
    "in_channels": 8,
    "num_layers": 24,
    "inner_dim": 2560,
    "attention_head_dim": 128,
    "num_attention_heads": 20,
    "mlp_ratio": 2.5,
    "out_channels": 8,
    "max_position": 32768,
    "rope_theta": 1000000.0,
    "speaker_embedding_dim": 512,
    "text_embedding_dim": 768,
    "ssl_encoder_depths": [8, 8],
    "ssl_names": ["mert", "m-hubert"],
    "ssl_latent_dims": [1024, 768],
    "lyric_encoder_vocab_size": 6693,
    "lyric_hidden_size": 1024,
    "patch_size": [16, 1],
    "max_height": 16,
    "max_width": 32768,
}

TINY: dict[str, Any] = {
    "in_channels": 8,
    "num_layers": 2,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "mlp_ratio": 2.5,
    "out_channels": 8,
    "max_position": 4096,
    "rope_theta": 1000000.0,
    "speaker_embedding_dim": 16,
    "text_embedding_dim": 32,
    "ssl_encoder_depths": [1, 1],
    "ssl_names": ["mert", "m-hubert"],
    "ssl_latent_dims": [16, 12],
    "lyric_encoder_vocab_size": 6693,
    "lyric_hidden_size": 32,
    "patch_size": [16, 1],
    "max_height": 16,
    "max_width": 4096,
    "lyric_num_blocks": 1,
    "lyric_attention_heads": 2,
    "lyric_linear_units": 64,
}

PRESETS: dict[str, dict[str, Any]] = {"tiny": TINY, "v1-3.5b": V1_3_5B}


def get_preset(name: str) -> dict[str, Any]:
    """A deep copy of preset ``name`` (``tiny`` or ``v1-3.5b``)."""
    return preset_copy(name, PRESETS, "ACE-Step")
