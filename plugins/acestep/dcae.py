"""ACE-Step's mel-spectrogram DC-AE (``music_dcae_f8c8``) in the diffusers ``AutoencoderDC`` layout, plain PyTorch.

The autoencoder works on a stereo log-mel "image" ``(B, 2, 128, F)`` (channels = audio channels, H = mel bins,
W = frames) and compresses it x8 in both H and W into ``(B, 8, 16, F/8)`` ("f8c8").

Design (Deep Compression Autoencoder, residual autoencoding): every resolution change carries a parameter-free
shortcut so the learned path only models a residual -

* encoder stage transitions (:class:`~audiotrain_acestep.dcae_blocks.DCDownBlock2d`): space-to-channel
  (pixel-unshuffle) then channel-group averaging to the new width;
* encoder output: the last feature map averaged over consecutive groups of ``C_last / latent_channels``
  channels is added to ``conv_out``'s result;
* decoder input: the latent with each channel repeated ``C_last / latent_channels`` times (interleaved) is added to
  ``conv_in``'s result;
* decoder stage transitions (:class:`~audiotrain_acestep.dcae_blocks.DCUpBlock2d`): channel repetition then
  channel-to-space (pixel-shuffle).

The released config (``DCAE_PRESETS["v1"]``) uses stride-2 conv downsampling ("Conv"), nearest-interpolation + conv
upsampling ("interpolate"), ResBlocks in the three high-resolution stages and EfficientViT blocks (multi-scale
linear attention + GLUMBConv) in the lowest one, RMS norm and SiLU. ``encode``/``decode`` here do not apply
``scaling_factor`` (kept only as a config value); MusicDCAE applies its own shift/scale.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from .dcae_blocks import DCDownBlock2d, DCUpBlock2d, RMSNorm, activation, build_block, channel_norm

__all__ = ["DCAEEncoder", "DCAEDecoder", "AutoencoderDC", "DCAE_CONFIG_KEYS"]

# Constructor arguments of AutoencoderDC (the keys a diffusers config.json of this model may carry).
DCAE_CONFIG_KEYS = (
    "in_channels",
    "latent_channels",
    "attention_head_dim",
    "encoder_block_types",
    "decoder_block_types",
    "encoder_block_out_channels",
    "decoder_block_out_channels",
    "encoder_layers_per_block",
    "decoder_layers_per_block",
    "encoder_qkv_multiscales",
    "decoder_qkv_multiscales",
    "upsample_block_type",
    "downsample_block_type",
    "decoder_norm_types",
    "decoder_act_fns",
    "scaling_factor",
    "encoder_out_shortcut",
    "decoder_in_shortcut",
    "decoder_conv_act_fn",
)


def _per_stage(value: Any, n: int, name: str) -> tuple:
    """Broadcast a str to ``n`` stages or check a sequence has ``n`` entries."""
    if isinstance(value, str):
        return (value,) * n
    value = tuple(value)
    if len(value) != n:
        raise ValueError(f"{name} has {len(value)} entries but there are {n} stages")
    return value


class DCAEEncoder(nn.Module):
    """Mel image -> latent: ``(B, in_channels, H, W) -> (B, latent_channels, H/2^(S-1), W/2^(S-1))`` for S stages.

    Keys: ``conv_in``, ``down_blocks.{i}.{j}`` (stage i: ``layers_per_block[i]`` blocks, then a
    :class:`DCDownBlock2d` except after the last stage), ``conv_out``. Encoder blocks always use RMS norm + SiLU.
    """

    def __init__(
        self,
        in_channels: int,
        latent_channels: int,
        attention_head_dim: int = 32,
        block_type: str | Sequence[str] = "ResBlock",
        block_out_channels: Sequence[int] = (128, 256, 512, 1024),
        layers_per_block: Sequence[int] = (2, 2, 3, 3),
        qkv_multiscales: Sequence[Sequence[int]] = ((), (), (5,), (5,)),
        downsample_block_type: str = "Conv",
        out_shortcut: bool = True,
    ) -> None:
        super().__init__()
        n = len(block_out_channels)
        block_type = _per_stage(block_type, n, "encoder_block_types")
        layers_per_block = _per_stage(layers_per_block, n, "encoder_layers_per_block")
        qkv_multiscales = tuple(tuple(q) for q in _per_stage(qkv_multiscales, n, "encoder_qkv_multiscales"))
        pixel_unshuffle = downsample_block_type == "pixel_unshuffle"
        first = block_out_channels[0] if layers_per_block[0] > 0 else block_out_channels[1]
        if layers_per_block[0] > 0:
            self.conv_in = nn.Conv2d(in_channels, first, 3, 1, 1)
        else:
            self.conv_in = DCDownBlock2d(in_channels, first, downsample=pixel_unshuffle, shortcut=False)
        stages = []
        for i, (width, num_layers) in enumerate(zip(block_out_channels, layers_per_block)):
            blocks: list[nn.Module] = [
                build_block(block_type[i], width, attention_head_dim, "rms_norm", "silu", qkv_multiscales[i])
                for _ in range(num_layers)
            ]
            if i < n - 1 and num_layers > 0:
                blocks.append(DCDownBlock2d(width, block_out_channels[i + 1], downsample=pixel_unshuffle, shortcut=True))
            stages.append(nn.Sequential(*blocks))
        self.down_blocks = nn.ModuleList(stages)
        self.conv_out = nn.Conv2d(block_out_channels[-1], latent_channels, 3, 1, 1)
        self.out_shortcut = out_shortcut
        if out_shortcut:
            if block_out_channels[-1] % latent_channels:
                raise ValueError("the encoder output shortcut needs the last width divisible by latent_channels")
            self.out_shortcut_group_size = block_out_channels[-1] // latent_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for stage in self.down_blocks:
            h = stage(h)
        out = self.conv_out(h)
        if self.out_shortcut:
            out = out + h.unflatten(1, (-1, self.out_shortcut_group_size)).mean(dim=2)
        return out


class DCAEDecoder(nn.Module):
    """Latent -> mel image: ``(B, latent_channels, h, w) -> (B, in_channels, h*2^(S-1), w*2^(S-1))``.

    Keys: ``conv_in``, ``up_blocks.{i}.{j}`` (stage i: a :class:`DCUpBlock2d` first except for the last stage, then
    ``layers_per_block[i]`` blocks; stages run from the last index down to 0), ``norm_out`` (RMS norm), ``conv_out``.
    Before ``conv_out``: RMS norm then ``conv_act_fn`` (ReLU).
    """

    def __init__(
        self,
        in_channels: int,
        latent_channels: int,
        attention_head_dim: int = 32,
        block_type: str | Sequence[str] = "ResBlock",
        block_out_channels: Sequence[int] = (128, 256, 512, 1024),
        layers_per_block: Sequence[int] = (3, 3, 3, 3),
        qkv_multiscales: Sequence[Sequence[int]] = ((), (), (5,), (5,)),
        norm_type: str | Sequence[str] = "rms_norm",
        act_fn: str | Sequence[str] = "silu",
        upsample_block_type: str = "interpolate",
        in_shortcut: bool = True,
        conv_act_fn: str = "relu",
    ) -> None:
        super().__init__()
        n = len(block_out_channels)
        block_type = _per_stage(block_type, n, "decoder_block_types")
        layers_per_block = _per_stage(layers_per_block, n, "decoder_layers_per_block")
        qkv_multiscales = tuple(tuple(q) for q in _per_stage(qkv_multiscales, n, "decoder_qkv_multiscales"))
        norm_type = _per_stage(norm_type, n, "decoder_norm_types")
        act_fn = _per_stage(act_fn, n, "decoder_act_fns")
        interpolate = upsample_block_type == "interpolate"
        self.conv_in = nn.Conv2d(latent_channels, block_out_channels[-1], 3, 1, 1)
        self.in_shortcut = in_shortcut
        if in_shortcut:
            if block_out_channels[-1] % latent_channels:
                raise ValueError("the decoder input shortcut needs the last width divisible by latent_channels")
            self.in_shortcut_repeats = block_out_channels[-1] // latent_channels
        stages: list[nn.Module] = [nn.Identity()] * n
        for i in reversed(range(n)):
            width, num_layers = block_out_channels[i], layers_per_block[i]
            blocks: list[nn.Module] = []
            if i < n - 1 and num_layers > 0:
                blocks.append(DCUpBlock2d(block_out_channels[i + 1], width, interpolate=interpolate, shortcut=True))
            blocks += [
                build_block(block_type[i], width, attention_head_dim, norm_type[i], act_fn[i], qkv_multiscales[i])
                for _ in range(num_layers)
            ]
            stages[i] = nn.Sequential(*blocks)
        self.up_blocks = nn.ModuleList(stages)
        last = block_out_channels[0] if layers_per_block[0] > 0 else block_out_channels[1]
        self.norm_out = RMSNorm(last, 1e-5, elementwise_affine=True, bias=True)
        self.conv_act = activation(conv_act_fn)
        if layers_per_block[0] > 0:
            self.conv_out = nn.Conv2d(last, in_channels, 3, 1, 1)
        else:
            self.conv_out = DCUpBlock2d(last, in_channels, interpolate=interpolate, shortcut=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        if self.in_shortcut:
            h = h + z.repeat_interleave(self.in_shortcut_repeats, dim=1)
        for stage in reversed(self.up_blocks):
            h = stage(h)
        h = self.conv_act(channel_norm(self.norm_out, h))
        return self.conv_out(h)


class AutoencoderDC(nn.Module):
    """DC-AE with ``encoder`` (:class:`DCAEEncoder`) and ``decoder`` (:class:`DCAEDecoder`).

    Constructor arguments are the diffusers ``AutoencoderDC`` config keys (see ``DCAE_PRESETS["v1"]`` for the
    released ACE-Step values). ``encode(x (B, in, H, W)) -> z (B, latent, H/8, W/8)`` and
    ``decode(z) -> x`` for 4 stages; no ``scaling_factor`` is applied (it is stored as an attribute only).
    """

    def __init__(
        self,
        in_channels: int = 2,
        latent_channels: int = 8,
        attention_head_dim: int = 32,
        encoder_block_types: str | Sequence[str] = ("ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"),
        decoder_block_types: str | Sequence[str] = ("ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"),
        encoder_block_out_channels: Sequence[int] = (128, 256, 512, 1024),
        decoder_block_out_channels: Sequence[int] = (128, 256, 512, 1024),
        encoder_layers_per_block: Sequence[int] = (2, 2, 3, 3),
        decoder_layers_per_block: Sequence[int] = (3, 3, 3, 3),
        encoder_qkv_multiscales: Sequence[Sequence[int]] = ((), (), (5,), (5,)),
        decoder_qkv_multiscales: Sequence[Sequence[int]] = ((), (), (5,), (5,)),
        upsample_block_type: str = "interpolate",
        downsample_block_type: str = "Conv",
        decoder_norm_types: str | Sequence[str] = "rms_norm",
        decoder_act_fns: str | Sequence[str] = "silu",
        scaling_factor: float = 0.41407,
        encoder_out_shortcut: bool = True,
        decoder_in_shortcut: bool = True,
        decoder_conv_act_fn: str = "relu",
    ) -> None:
        super().__init__()
        self.encoder = DCAEEncoder(
            in_channels,
            latent_channels,
            attention_head_dim=attention_head_dim,
            block_type=encoder_block_types,
            block_out_channels=encoder_block_out_channels,
            layers_per_block=encoder_layers_per_block,
            qkv_multiscales=encoder_qkv_multiscales,
            downsample_block_type=downsample_block_type,
            out_shortcut=encoder_out_shortcut,
        )
        self.decoder = DCAEDecoder(
            in_channels,
            latent_channels,
            attention_head_dim=attention_head_dim,
            block_type=decoder_block_types,
            block_out_channels=decoder_block_out_channels,
            layers_per_block=decoder_layers_per_block,
            qkv_multiscales=decoder_qkv_multiscales,
            norm_type=decoder_norm_types,
            act_fn=decoder_act_fns,
            upsample_block_type=upsample_block_type,
            in_shortcut=decoder_in_shortcut,
            conv_act_fn=decoder_conv_act_fn,
        )
        self.scaling_factor = scaling_factor
        self.spatial_compression_ratio = 2 ** (len(encoder_block_out_channels) - 1)

    @classmethod
    def from_config(cls, config: dict) -> "AutoencoderDC":
        """Build from a config dict, ignoring keys that are not constructor arguments (``_class_name`` etc.)."""
        return cls(**{k: v for k, v in config.items() if k in DCAE_CONFIG_KEYS})

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W) -> (B, latent_channels, H/r, W/r)``, r = ``spatial_compression_ratio``."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, latent_channels, h, w) -> (B, in_channels, h*r, w*r)``."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``decode(encode(x))``, same shape as ``x``."""
        return self.decode(self.encode(x))
