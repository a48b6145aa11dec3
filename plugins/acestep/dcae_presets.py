"""Architecture presets for ACE-Step's music autoencoder: the DC-AE and the vocoder.

* ``"v1"`` - the released ``music_dcae_f8c8`` / ``music_vocoder`` configs (156,812,426 + 103,005,138 params).
  The DC-AE values are those that load the released checkpoint (its folder may ship an empty config.json).
* ``"tiny"`` - a CPU test model (~0.27 M DC-AE + ~0.09 M vocoder params) with the same interfaces: 2 audio channels in,
  8 latent channels, x8 compression in mel height (128 -> 16) and time (f8c8); a vocoder taking 128 mel bins and
  upsampling x512 (one hop) to 44.1 kHz. Widths keep every head/shortcut divisibility valid (head dim 16 with a
  64-wide attention stage = 4 heads; 64/8 latent groups; 4*C_in/C_out = 2 at every transition).

Presets are plain dicts of constructor keyword arguments (JSON-compatible lists), usable as config.json content.
"""

from __future__ import annotations

import copy

__all__ = ["DCAE_PRESETS", "VOCODER_PRESETS", "dcae_preset", "vocoder_preset"]

DCAE_PRESETS: dict[str, dict] = {
    "v1": {
        "in_channels": 2,
        "latent_channels": 8,
        "attention_head_dim": 32,
        "encoder_block_types": ["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"],
        "decoder_block_types": ["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"],
        "encoder_block_out_channels": [128, 256, 512, 1024],
        "decoder_block_out_channels": [128, 256, 512, 1024],
        "encoder_layers_per_block": [2, 2, 3, 3],
        "decoder_layers_per_block": [3, 3, 3, 3],
        "encoder_qkv_multiscales": [[], [], [5], [5]],
        "decoder_qkv_multiscales": [[], [], [5], [5]],
        "upsample_block_type": "interpolate",
        "downsample_block_type": "Conv",
        "decoder_norm_types": "rms_norm",
        "decoder_act_fns": "silu",
        "scaling_factor": 0.41407,
    },
    "tiny": {
        "in_channels": 2,
        "latent_channels": 8,
        "attention_head_dim": 16,
        "encoder_block_types": ["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"],
        "decoder_block_types": ["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"],
        "encoder_block_out_channels": [8, 16, 32, 64],
        "decoder_block_out_channels": [8, 16, 32, 64],
        "encoder_layers_per_block": [1, 1, 1, 1],
        "decoder_layers_per_block": [1, 1, 1, 1],
        "encoder_qkv_multiscales": [[], [], [5], [5]],
        "decoder_qkv_multiscales": [[], [], [5], [5]],
        "upsample_block_type": "interpolate",
        "downsample_block_type": "Conv",
        "decoder_norm_types": "rms_norm",
        "decoder_act_fns": "silu",
        "scaling_factor": 0.41407,
    },
}

_MEL_FRONT_END = {
    "sampling_rate": 44100,
    "n_fft": 2048,
    "win_length": 2048,
    "hop_length": 512,
    "f_min": 40,
    "f_max": 16000,
    "n_mels": 128,
}

VOCODER_PRESETS: dict[str, dict] = {
    "v1": {
        "input_channels": 128,
        "depths": [3, 3, 9, 3],
        "dims": [128, 256, 384, 512],
        "drop_path_rate": 0.0,
        "kernel_sizes": [7],
        "upsample_rates": [4, 4, 2, 2, 2, 2, 2],
        "upsample_kernel_sizes": [8, 8, 4, 4, 4, 4, 4],
        "resblock_kernel_sizes": [3, 7, 11, 13],
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5], [1, 3, 5]],
        "num_mels": 512,
        "upsample_initial_channel": 1024,
        "use_template": False,
        "pre_conv_kernel_size": 13,
        "post_conv_kernel_size": 13,
        **_MEL_FRONT_END,
    },
    "tiny": {
        "input_channels": 128,
        "depths": [1, 1],
        "dims": [32, 64],
        "drop_path_rate": 0.0,
        "kernel_sizes": [7],
        "upsample_rates": [8, 8, 8],
        "upsample_kernel_sizes": [16, 16, 16],
        "resblock_kernel_sizes": [3, 5],
        "resblock_dilation_sizes": [[1, 3], [1, 3]],
        "num_mels": 64,
        "upsample_initial_channel": 16,
        "use_template": False,
        "pre_conv_kernel_size": 7,
        "post_conv_kernel_size": 7,
        **_MEL_FRONT_END,
    },
}


def dcae_preset(name: str) -> dict:
    """A deep copy of ``DCAE_PRESETS[name]`` (``"v1"`` or ``"tiny"``)."""
    if name not in DCAE_PRESETS:
        raise KeyError(f"unknown DCAE preset {name!r}; expected one of {sorted(DCAE_PRESETS)}")
    return copy.deepcopy(DCAE_PRESETS[name])


def vocoder_preset(name: str) -> dict:
    """A deep copy of ``VOCODER_PRESETS[name]`` (``"v1"`` or ``"tiny"``)."""
    if name not in VOCODER_PRESETS:
        raise KeyError(f"unknown vocoder preset {name!r}; expected one of {sorted(VOCODER_PRESETS)}")
    return copy.deepcopy(VOCODER_PRESETS[name])
