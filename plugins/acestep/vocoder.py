"""ACE-Step's music vocoder ``ADaMoSHiFiGANV1`` (``music_vocoder``) in plain PyTorch: log-mel -> 44.1 kHz mono.

``decode(mel (B, 128, F)) -> wav (B, 1, F * 512)`` in ``[-1, 1]`` (tanh output), run per audio channel.

* ``backbone`` - ConvNeXt 1-D encoder: stem (k7 conv with replicate padding + channels-first LayerNorm), then for
  every stage a transition (LayerNorm + 1x1 conv to the stage width, except stage 0) followed by ConvNeXt blocks
  (depthwise conv, LayerNorm, 4x MLP with GELU, layer scale ``gamma``, residual); final LayerNorm.
  Released: depths [3, 3, 9, 3], dims [128, 256, 384, 512], kernel 7.
* ``head`` - HiFi-GAN generator: ``conv_pre`` (k13), then per upsample stage SiLU -> transposed conv (stride u,
  kernel k, padding (k-u)/2, halving the width) -> mean of the stage's multi-receptive-field ResBlocks; then SiLU,
  ``conv_post`` (k13, -> 1 channel), tanh. Released: rates (4, 4, 2, 2, 2, 2, 2) = 512 = hop, kernels
  (8, 8, 4, 4, 4, 4, 4), resblock kernels (3, 7, 11, 13) with dilations (1, 3, 5), initial width 1024.
* ``mel_transform`` - the :class:`~audiotrain_acestep.mel.LogMelSpectrogram` (``encode``), with persistent buffers
  ``mel_transform.spectrogram.window`` and ``mel_transform.mel_scale.fb``.

Weight norm: every head conv stores the magnitude/direction pair of the original (pre-parametrisation) PyTorch
weight norm as parameters ``weight_g`` ``(C0, 1, 1)`` and ``weight_v`` (the conv weight shape), plus ``bias``;
the conv weight ``g * v / ||v||`` (norm over all axes but the first) is recomputed on every call. Released
checkpoints therefore load with ``load_state_dict(strict=True)`` and no key mapping; no deprecated
``torch.nn.utils.weight_norm`` hooks are used.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .mel import LogMelSpectrogram

__all__ = [
    "WNConv1d",
    "WNConvTranspose1d",
    "ChannelLayerNorm",
    "ConvNeXtBlock",
    "ConvNeXtEncoder",
    "HiFiGANResBlock",
    "HiFiGANGenerator",
    "ADaMoSHiFiGANV1",
    "VOCODER_CONFIG_KEYS",
]

VOCODER_CONFIG_KEYS = (
    "input_channels",
    "depths",
    "dims",
    "drop_path_rate",
    "kernel_sizes",
    "upsample_rates",
    "upsample_kernel_sizes",
    "resblock_kernel_sizes",
    "resblock_dilation_sizes",
    "num_mels",
    "upsample_initial_channel",
    "use_template",
    "pre_conv_kernel_size",
    "post_conv_kernel_size",
    "sampling_rate",
    "n_fft",
    "win_length",
    "hop_length",
    "f_min",
    "f_max",
    "n_mels",
)


class _WeightNormConv(nn.Module):
    """Shared weight-norm storage: parameters ``bias`` ``[out]``, ``weight_g`` ``[shape[0], 1, 1]``, ``weight_v`` ``shape``."""

    def __init__(self, shape: tuple[int, int, int], out_channels: int, fan_in: int, init_std: float | None) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.weight_g = nn.Parameter(torch.empty(shape[0], 1, 1))
        self.weight_v = nn.Parameter(torch.empty(shape))
        self._fan_in = fan_in
        self.reset_parameters(init_std)

    @torch.no_grad()
    def reset_parameters(self, init_std: float | None = None) -> None:
        """``v`` ~ N(0, init_std) (or PyTorch's default conv init when None), bias ~ U(+-1/sqrt(fan_in)),
        ``g = ||v||`` so the effective weight equals ``v`` at init. No-op on the meta device."""
        if self.weight_v.is_meta:
            return
        if init_std is None:
            nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))
        else:
            nn.init.normal_(self.weight_v, 0.0, init_std)
        bound = 1.0 / math.sqrt(self._fan_in)
        nn.init.uniform_(self.bias, -bound, bound)
        self.weight_g.copy_(self.weight_v.norm(dim=(1, 2), keepdim=True))

    @property
    def weight(self) -> torch.Tensor:
        """The effective conv weight ``g * v / ||v||`` (norm computed in float32), in ``weight_v``'s dtype."""
        v = self.weight_v.float()
        w = v * (self.weight_g.float() / v.norm(dim=(1, 2), keepdim=True))
        return w.to(self.weight_v.dtype)


class WNConv1d(_WeightNormConv):
    """Weight-normed ``Conv1d``: ``(B, C_in, L) -> (B, C_out, L_out)``; ``weight_v`` ``[C_out, C_in, k]``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        padding: int = 0,
        init_std: float | None = None,
    ) -> None:
        super().__init__((out_channels, in_channels, kernel_size), out_channels, in_channels * kernel_size, init_std)
        self.stride, self.dilation, self.padding = stride, dilation, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)


class WNConvTranspose1d(_WeightNormConv):
    """Weight-normed ``ConvTranspose1d``: ``(B, C_in, L) -> (B, C_out, (L-1)*stride - 2*padding + k)``;
    ``weight_v`` ``[C_in, C_out, k]`` and ``weight_g`` ``[C_in, 1, 1]`` (norm over the input-channel axis 0)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        init_std: float | None = None,
    ) -> None:
        super().__init__((in_channels, out_channels, kernel_size), out_channels, out_channels * kernel_size, init_std)
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose1d(x, self.weight, self.bias, self.stride, self.padding)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of ``(B, C, L)`` (the ConvNeXt "channels_first" form), eps 1e-6."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None] * x + self.bias[:, None]


class ConvNeXtBlock(nn.Module):
    """``x + drop_path(gamma * pwconv2(GELU(pwconv1(LN(dwconv(x))))))``; ``(B, C, L) -> (B, C, L)``.

    ``dwconv`` depthwise k-tap conv, ``norm`` LayerNorm (eps 1e-6) over channels, ``pwconv1/2`` linears
    ``C -> 4C -> C``, ``gamma`` the per-channel layer scale.
    """

    def __init__(self, dim: int, kernel_size: int = 7, drop_path: float = 0.0, layer_scale_init_value: float = 1e-6,
                 mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=(kernel_size - 1) // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, int(mlp_ratio * dim))
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(int(mlp_ratio * dim), dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale_init_value))) if layer_scale_init_value > 0 else None
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dwconv(x).transpose(1, 2)
        h = self.pwconv2(self.act(self.pwconv1(self.norm(h))))
        if self.gamma is not None:
            h = self.gamma * h
        h = h.transpose(1, 2)
        if self.training and self.drop_path > 0.0:
            keep = 1.0 - self.drop_path
            mask = h.new_empty((h.shape[0], 1, 1)).bernoulli_(keep) / keep
            h = h * mask
        return x + h


class ConvNeXtEncoder(nn.Module):
    """ConvNeXt 1-D backbone: ``(B, input_channels, F) -> (B, dims[-1], F)``.

    Keys: ``channel_layers.0`` = (stem conv k7 replicate-padded, LayerNorm), ``channel_layers.i`` (i >= 1) =
    (LayerNorm, 1x1 conv ``dims[i-1] -> dims[i]``), ``stages.i.j`` ConvNeXt blocks, ``norm``.
    """

    def __init__(
        self,
        input_channels: int = 128,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (128, 256, 384, 512),
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        kernel_size: int = 7,
    ) -> None:
        super().__init__()
        if len(depths) != len(dims):
            raise ValueError("depths and dims must have the same length")
        stem = nn.Sequential(
            nn.Conv1d(input_channels, dims[0], kernel_size=7, padding=3, padding_mode="replicate"),
            ChannelLayerNorm(dims[0]),
        )
        self.channel_layers = nn.ModuleList([stem])
        for i in range(len(dims) - 1):
            self.channel_layers.append(nn.Sequential(ChannelLayerNorm(dims[i]), nn.Conv1d(dims[i], dims[i + 1], 1)))
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.stages = nn.ModuleList()
        cur = 0
        for i, depth in enumerate(depths):
            self.stages.append(
                nn.Sequential(
                    *[ConvNeXtBlock(dims[i], kernel_size, rates[cur + j], layer_scale_init_value) for j in range(depth)]
                )
            )
            cur += depth
        self.norm = ChannelLayerNorm(dims[-1])
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for transition, stage in zip(self.channel_layers, self.stages):
            x = stage(transition(x))
        return self.norm(x)


def _same_padding(kernel_size: int, dilation: int = 1) -> int:
    return (kernel_size * dilation - dilation) // 2


class HiFiGANResBlock(nn.Module):
    """HiFi-GAN "ResBlock1": for each dilation d, ``x = x + c2(SiLU(c1_d(SiLU(x))))`` (length-preserving).

    Keys ``convs1.i`` (dilated) and ``convs2.i`` (dilation 1), all :class:`WNConv1d`. ``(B, C, L) -> (B, C, L)``.
    """

    def __init__(self, channels: int, kernel_size: int = 3, dilation: Sequence[int] = (1, 3, 5)) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            WNConv1d(channels, channels, kernel_size, dilation=d, padding=_same_padding(kernel_size, d), init_std=0.01)
            for d in dilation
        )
        self.convs2 = nn.ModuleList(
            WNConv1d(channels, channels, kernel_size, padding=_same_padding(kernel_size), init_std=0.01)
            for _ in dilation
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(F.silu(c1(F.silu(x))))
        return x


class HiFiGANGenerator(nn.Module):
    """HiFi-GAN head: ``(B, num_mels, F) -> (B, 1, F * prod(upsample_rates))`` in ``[-1, 1]``.

    Keys: ``conv_pre``, ``ups.i`` (:class:`WNConvTranspose1d`, width ``C0/2^i -> C0/2^(i+1)``),
    ``resblocks.(i*K + j)`` (stage i, kernel j), ``conv_post``. Stage output = mean over its K resblocks.
    """

    def __init__(
        self,
        hop_length: int = 512,
        upsample_rates: Sequence[int] = (4, 4, 2, 2, 2, 2, 2),
        upsample_kernel_sizes: Sequence[int] = (8, 8, 4, 4, 4, 4, 4),
        resblock_kernel_sizes: Sequence[int] = (3, 7, 11, 13),
        resblock_dilation_sizes: Sequence[Sequence[int]] = ((1, 3, 5),) * 4,
        num_mels: int = 512,
        upsample_initial_channel: int = 1024,
        pre_conv_kernel_size: int = 13,
        post_conv_kernel_size: int = 13,
    ) -> None:
        super().__init__()
        if math.prod(upsample_rates) != hop_length:
            raise ValueError(f"prod(upsample_rates)={math.prod(upsample_rates)} must equal hop_length={hop_length}")
        if len(upsample_rates) != len(upsample_kernel_sizes) or len(resblock_kernel_sizes) != len(resblock_dilation_sizes):
            raise ValueError("upsample rates/kernels and resblock kernels/dilations must pair up")
        self.num_kernels = len(resblock_kernel_sizes)
        self.conv_pre = WNConv1d(
            num_mels, upsample_initial_channel, pre_conv_kernel_size, padding=_same_padding(pre_conv_kernel_size)
        )
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        ch = upsample_initial_channel
        for i, (u, k) in enumerate(zip(upsample_rates, upsample_kernel_sizes)):
            c_in, ch = upsample_initial_channel // 2**i, upsample_initial_channel // 2 ** (i + 1)
            self.ups.append(WNConvTranspose1d(c_in, ch, k, stride=u, padding=(k - u) // 2, init_std=0.01))
        for i in range(len(self.ups)):
            width = upsample_initial_channel // 2 ** (i + 1)
            for k, d in zip(resblock_kernel_sizes, resblock_dilation_sizes):
                self.resblocks.append(HiFiGANResBlock(width, k, tuple(d)))
        self.conv_post = WNConv1d(ch, 1, post_conv_kernel_size, padding=_same_padding(post_conv_kernel_size), init_std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(x)
        for i, up in enumerate(self.ups):
            x = up(F.silu(x))
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            acc = blocks[0](x)
            for block in blocks[1:]:
                acc = acc + block(x)
            x = acc / self.num_kernels
        return torch.tanh(self.conv_post(F.silu(x)))


class ADaMoSHiFiGANV1(nn.Module):
    """ConvNeXt backbone + HiFi-GAN head + log-mel front end; constructor arguments are the released config keys.

    ``decode(mel (B, input_channels, F)) -> (B, 1, F * hop_length)`` at ``sampling_rate``;
    ``encode(wav (B, N) or (B, 1, N)) -> log-mel (B, n_mels, N // hop_length)``.
    """

    def __init__(
        self,
        input_channels: int = 128,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (128, 256, 384, 512),
        drop_path_rate: float = 0.0,
        kernel_sizes: Sequence[int] = (7,),
        upsample_rates: Sequence[int] = (4, 4, 2, 2, 2, 2, 2),
        upsample_kernel_sizes: Sequence[int] = (8, 8, 4, 4, 4, 4, 4),
        resblock_kernel_sizes: Sequence[int] = (3, 7, 11, 13),
        resblock_dilation_sizes: Sequence[Sequence[int]] = ((1, 3, 5),) * 4,
        num_mels: int = 512,
        upsample_initial_channel: int = 1024,
        use_template: bool = False,
        pre_conv_kernel_size: int = 13,
        post_conv_kernel_size: int = 13,
        sampling_rate: int = 44100,
        n_fft: int = 2048,
        win_length: int = 2048,
        hop_length: int = 512,
        f_min: float = 40,
        f_max: float = 16000,
        n_mels: int = 128,
    ) -> None:
        super().__init__()
        if use_template:
            raise ValueError("use_template=True (noise-template HiFi-GAN) is not part of the ACE-Step vocoder")
        if len(kernel_sizes) != 1:
            raise ValueError("only a single ConvNeXt kernel size is supported (the released config uses (7,))")
        if num_mels != dims[-1]:
            raise ValueError(f"num_mels ({num_mels}) is the head input width and must equal dims[-1] ({dims[-1]})")
        self.sampling_rate = sampling_rate
        self.hop_length = hop_length
        self.backbone = ConvNeXtEncoder(input_channels, depths, dims, drop_path_rate, kernel_size=kernel_sizes[0])
        self.head = HiFiGANGenerator(
            hop_length=hop_length,
            upsample_rates=upsample_rates,
            upsample_kernel_sizes=upsample_kernel_sizes,
            resblock_kernel_sizes=resblock_kernel_sizes,
            resblock_dilation_sizes=resblock_dilation_sizes,
            num_mels=num_mels,
            upsample_initial_channel=upsample_initial_channel,
            pre_conv_kernel_size=pre_conv_kernel_size,
            post_conv_kernel_size=post_conv_kernel_size,
        )
        self.mel_transform = LogMelSpectrogram(
            sample_rate=sampling_rate,
            n_fft=n_fft,
            win_length=win_length,
            hop_length=hop_length,
            n_mels=n_mels,
            f_min=f_min,
            f_max=f_max,
        )

    @classmethod
    def from_config(cls, config: dict) -> "ADaMoSHiFiGANV1":
        """Build from a config dict, ignoring keys that are not constructor arguments (``_class_name`` etc.)."""
        return cls(**{k: v for k, v in config.items() if k in VOCODER_CONFIG_KEYS})

    def decode(self, mel: torch.Tensor) -> torch.Tensor:
        """``(B, input_channels, F) -> (B, 1, F * hop_length)``."""
        return self.head(self.backbone(mel))

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` or ``(B, 1, N)`` -> ``(B, n_mels, N // hop_length)`` natural-log mel."""
        return self.mel_transform(wav)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`decode`."""
        return self.decode(mel)
