"""Building blocks of the DC-AE (Deep Compression Autoencoder) used by ACE-Step's music autoencoder.

Re-implemented in plain PyTorch with the parameter names of the diffusers ``AutoencoderDC`` layout, so the
released ``music_dcae_f8c8`` checkpoint loads with no key remapping. All feature maps are images
``(B, C, H, W)``; for the music DCAE, H is the mel axis and W is time.

Blocks:

* :class:`RMSNorm` - RMS norm over the last axis with an affine weight *and bias*; the image blocks move the
  channel axis last to normalise each pixel over its channels.
* :class:`ResBlock` - ``x + norm(conv2(act(conv1(x))))``; conv2 has no bias.
* :class:`MultiscaleLinearAttention` - EfficientViT's ReLU linear attention with multi-scale token aggregation.
* :class:`GLUMBConv` - inverted-bottleneck conv FFN with a SiLU gate (1x1 expand, 3x3 depthwise, gate, 1x1).
* :class:`EfficientViTBlock` - attention then GLUMBConv, both residual.
* :class:`DCDownBlock2d` / :class:`DCUpBlock2d` - resolution changes with the DC-AE space-to-channel shortcuts.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "RMSNorm",
    "ResBlock",
    "MultiscaleProjection",
    "MultiscaleLinearAttention",
    "GLUMBConv",
    "EfficientViTBlock",
    "DCDownBlock2d",
    "DCUpBlock2d",
    "build_block",
    "activation",
    "channel_norm",
]


def activation(name: str | None) -> nn.Module:
    """The activation module for a diffusers-style name (``silu``/``swish``, ``relu``, ``relu6``, ``gelu``, ``mish``)."""
    if name is None:
        return nn.Identity()
    table = {
        "silu": nn.SiLU,
        "swish": nn.SiLU,
        "relu": nn.ReLU,
        "relu6": nn.ReLU6,
        "gelu": nn.GELU,
        "mish": nn.Mish,
    }
    key = name.lower()
    if key not in table:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(table)}")
    return table[key]()


class RMSNorm(nn.Module):
    """RMS normalisation over the last axis: ``x / sqrt(mean(x^2) + eps) * weight + bias``.

    The statistic is computed in float32; when the weight is half precision the normalised value is cast to it
    before the affine step (the diffusers behaviour). Input ``(..., dim)`` -> output of the same shape.
    """

    def __init__(self, dim: int, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True) -> None:
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if elementwise_affine else None
        self.bias = nn.Parameter(torch.zeros(dim)) if (elementwise_affine and bias) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        input_dtype = x.dtype
        variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(variance + self.eps)
        if self.weight is None:
            return x.to(input_dtype)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            x = x.to(self.weight.dtype)
        x = x * self.weight
        if self.bias is not None:
            x = x + self.bias
        return x

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


def channel_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply an :class:`RMSNorm` over the channel axis of an image ``(B, C, H, W)`` (other norms act directly)."""
    if isinstance(norm, RMSNorm):
        return norm(x.movedim(1, -1)).movedim(-1, 1)
    return norm(x)


def _make_norm(norm_type: str | None, channels: int) -> nn.Module:
    if norm_type is None:
        return nn.Identity()
    if norm_type == "rms_norm":
        return RMSNorm(channels, eps=1e-5, elementwise_affine=True, bias=True)
    if norm_type == "batch_norm":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"unknown norm_type {norm_type!r}; expected 'rms_norm' or 'batch_norm'")


class ResBlock(nn.Module):
    """``x + norm(conv2(act(conv1(x))))`` with 3x3 convs; ``(B, C, H, W) -> (B, C, H, W)``.

    Keys: ``conv1.weight/bias``, ``conv2.weight`` (no bias), ``norm.weight/bias``.
    """

    def __init__(self, in_channels: int, out_channels: int, norm_type: str = "rms_norm", act_fn: str = "silu") -> None:
        super().__init__()
        if in_channels != out_channels:
            raise ValueError("ResBlock keeps the width: in_channels must equal out_channels")
        self.nonlinearity = activation(act_fn)
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False)
        self.norm = _make_norm(norm_type, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(self.nonlinearity(self.conv1(x)))
        return channel_norm(self.norm, h) + x


class MultiscaleProjection(nn.Module):
    """Multi-scale token aggregation of the stacked q/k/v map: a depthwise ``k x k`` conv (``proj_in``) then a
    grouped 1x1 conv with one group per (head, q|k|v) slice (``proj_out``). Both have no bias.

    ``(B, 3*inner, H, W) -> (B, 3*inner, H, W)``.
    """

    def __init__(self, inner_dim: int, num_heads: int, kernel_size: int) -> None:
        super().__init__()
        channels = 3 * inner_dim
        self.proj_in = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=False)
        self.proj_out = nn.Conv2d(channels, channels, 1, 1, 0, groups=3 * num_heads, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_out(self.proj_in(x))


class MultiscaleLinearAttention(nn.Module):
    """EfficientViT multi-scale ReLU linear attention with a residual connection.

    ``(B, C, H, W) -> (B, C, H, W)``. Steps:

    1. per pixel, ``to_q``, ``to_k``, ``to_v`` (bias-free linears ``C -> inner``) are concatenated along channels
       into a ``3*inner`` map (the layout of the original fused qkv conv);
    2. each aggregation branch (:class:`MultiscaleProjection`) adds another ``3*inner`` map;
    3. the stacked map ``(B, 3*inner*(1+branches), H, W)`` is cut into consecutive groups of ``3*head_dim``
       channels (one head per group), and each group into q, k, v of ``head_dim`` channels each;
    4. ReLU on q and k; attention ``v k^T q / (1 k^T q + eps)`` - linear form when ``H*W > head_dim``
       (computed in float32), the equivalent quadratic form otherwise;
    5. ``to_out`` (bias-free linear ``inner*(1+branches) -> C``), RMS norm, plus the input.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        attention_head_dim: int = 32,
        mult: float = 1.0,
        norm_type: str = "rms_norm",
        kernel_sizes: Sequence[int] = (5,),
        residual_connection: bool = True,
        eps: float = 1e-15,
    ) -> None:
        super().__init__()
        num_heads = int(in_channels // attention_head_dim * mult)
        if num_heads < 1:
            raise ValueError(f"in_channels={in_channels} is smaller than attention_head_dim={attention_head_dim}")
        inner = num_heads * attention_head_dim
        self.attention_head_dim = attention_head_dim
        self.num_heads = num_heads
        self.eps = eps
        self.residual_connection = residual_connection
        self.to_q = nn.Linear(in_channels, inner, bias=False)
        self.to_k = nn.Linear(in_channels, inner, bias=False)
        self.to_v = nn.Linear(in_channels, inner, bias=False)
        self.to_qkv_multiscale = nn.ModuleList(MultiscaleProjection(inner, num_heads, k) for k in kernel_sizes)
        self.nonlinearity = nn.ReLU()
        self.to_out = nn.Linear(inner * (1 + len(kernel_sizes)), out_channels, bias=False)
        self.norm_out = _make_norm(norm_type, out_channels)

    def _linear(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # q, k, v: (B, heads, d, N). Append a row of ones to v so the last output row is the normaliser.
        v = F.pad(v, (0, 0, 0, 1), mode="constant", value=1.0)
        kv = torch.matmul(v, k.transpose(-1, -2))  # (B, heads, d+1, d)
        out = torch.matmul(kv, q).to(torch.float32)  # (B, heads, d+1, N)
        return out[:, :, :-1] / (out[:, :, -1:] + self.eps)

    def _quadratic(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        scores = torch.matmul(k.transpose(-1, -2), q).to(torch.float32)  # (B, heads, N, N)
        scores = scores / (scores.sum(dim=2, keepdim=True) + self.eps)
        return torch.matmul(v, scores.to(v.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        use_linear = height * width > self.attention_head_dim
        original_dtype = x.dtype
        pixels = x.movedim(1, -1)
        qkv = torch.cat([self.to_q(pixels), self.to_k(pixels), self.to_v(pixels)], dim=-1).movedim(-1, 1)
        maps = [qkv] + [branch(qkv) for branch in self.to_qkv_multiscale]
        h = torch.cat(maps, dim=1)
        if use_linear:
            h = h.to(torch.float32)
        h = h.reshape(batch, -1, 3 * self.attention_head_dim, height * width)
        q, k, v = h.chunk(3, dim=2)
        q = self.nonlinearity(q)
        k = self.nonlinearity(k)
        if use_linear:
            h = self._linear(q, k, v).to(original_dtype)
        else:
            h = self._quadratic(q, k, v)
        h = h.reshape(batch, -1, height, width)
        h = self.to_out(h.movedim(1, -1)).movedim(-1, 1)
        h = channel_norm(self.norm_out, h)
        if self.residual_connection:
            h = h + x
        return h


class GLUMBConv(nn.Module):
    """Gated inverted-bottleneck conv FFN with residual; ``(B, C, H, W) -> (B, C_out, H, W)``.

    ``conv_inverted`` (1x1, C -> 2*hidden, bias) -> SiLU -> ``conv_depth`` (3x3 depthwise, bias) -> split into
    value and gate halves -> ``value * SiLU(gate)`` -> ``conv_point`` (1x1, hidden -> C_out, no bias) -> RMS norm
    -> + input. ``hidden = expand_ratio * C``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expand_ratio: float = 4,
        norm_type: str | None = "rms_norm",
        residual_connection: bool = True,
    ) -> None:
        super().__init__()
        hidden = int(expand_ratio * in_channels)
        self.residual_connection = residual_connection
        self.nonlinearity = nn.SiLU()
        self.conv_inverted = nn.Conv2d(in_channels, hidden * 2, 1, 1, 0)
        self.conv_depth = nn.Conv2d(hidden * 2, hidden * 2, 3, 1, 1, groups=hidden * 2)
        self.conv_point = nn.Conv2d(hidden, out_channels, 1, 1, 0, bias=False)
        self.norm = RMSNorm(out_channels, eps=1e-5, elementwise_affine=True, bias=True) if norm_type == "rms_norm" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.nonlinearity(self.conv_inverted(x))
        h = self.conv_depth(h)
        h, gate = torch.chunk(h, 2, dim=1)
        h = self.conv_point(h * self.nonlinearity(gate))
        if self.norm is not None:
            h = channel_norm(self.norm, h)
        if self.residual_connection:
            h = h + x
        return h


class EfficientViTBlock(nn.Module):
    """``conv_out(attn(x))``: :class:`MultiscaleLinearAttention` (context) then :class:`GLUMBConv` (local),
    each with its own residual. ``(B, C, H, W) -> (B, C, H, W)``. The FFN is always RMS-normed."""

    def __init__(
        self,
        in_channels: int,
        attention_head_dim: int = 32,
        qkv_multiscales: Sequence[int] = (5,),
        norm_type: str = "rms_norm",
        mult: float = 1.0,
    ) -> None:
        super().__init__()
        self.attn = MultiscaleLinearAttention(
            in_channels,
            in_channels,
            attention_head_dim=attention_head_dim,
            mult=mult,
            norm_type=norm_type,
            kernel_sizes=tuple(qkv_multiscales),
            residual_connection=True,
        )
        self.conv_out = GLUMBConv(in_channels, in_channels, norm_type="rms_norm")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.attn(x))


def build_block(
    block_type: str,
    channels: int,
    attention_head_dim: int,
    norm_type: str,
    act_fn: str,
    qkv_multiscales: Sequence[int] = (),
) -> nn.Module:
    """A width-preserving stage block: ``"ResBlock"`` or ``"EfficientViTBlock"`` (act_fn is unused by the latter)."""
    if block_type == "ResBlock":
        return ResBlock(channels, channels, norm_type=norm_type, act_fn=act_fn)
    if block_type == "EfficientViTBlock":
        return EfficientViTBlock(
            channels, attention_head_dim=attention_head_dim, qkv_multiscales=qkv_multiscales, norm_type=norm_type
        )
    raise ValueError(f"unknown block type {block_type!r}; expected 'ResBlock' or 'EfficientViTBlock'")


class DCDownBlock2d(nn.Module):
    """Halve H and W: ``(B, C_in, H, W) -> (B, C_out, H/2, W/2)``.

    Main path: a 3x3 stride-2 conv (``downsample=False``, the "Conv" downsample type) or a 3x3 stride-1 conv to
    ``C_out/4`` followed by pixel-unshuffle (``downsample=True``, "pixel_unshuffle").
    Shortcut (DC-AE residual autoencoding, space-to-channel): pixel-unshuffle the input to ``4*C_in`` channels and
    average consecutive groups of ``4*C_in/C_out`` channels down to ``C_out``; it is added to the main path.
    """

    def __init__(self, in_channels: int, out_channels: int, downsample: bool = False, shortcut: bool = True) -> None:
        super().__init__()
        self.factor = 2
        self.downsample = downsample
        self.shortcut = shortcut
        self.group_size = in_channels * self.factor**2 // out_channels
        if shortcut and (self.group_size < 1 or in_channels * self.factor**2 % out_channels):
            raise ValueError(f"DCDownBlock2d shortcut needs 4*in_channels divisible by out_channels ({in_channels}, {out_channels})")
        conv_out = out_channels
        if downsample:
            if out_channels % self.factor**2:
                raise ValueError("pixel_unshuffle downsampling needs out_channels divisible by 4")
            conv_out = out_channels // self.factor**2
        self.conv = nn.Conv2d(in_channels, conv_out, 3, stride=1 if downsample else 2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        if self.downsample:
            h = F.pixel_unshuffle(h, self.factor)
        if self.shortcut:
            y = F.pixel_unshuffle(x, self.factor)
            h = h + y.unflatten(1, (-1, self.group_size)).mean(dim=2)
        return h


class DCUpBlock2d(nn.Module):
    """Double H and W: ``(B, C_in, H, W) -> (B, C_out, 2H, 2W)``.

    Main path: nearest-neighbour x2 interpolation then a 3x3 conv (``interpolate=True``, the "interpolate" type), or
    a 3x3 conv to ``4*C_out`` then pixel-shuffle. Shortcut (channel-to-space): repeat every input channel
    ``4*C_out/C_in`` times (interleaved) and pixel-shuffle to ``C_out`` channels; added to the main path.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        interpolate: bool = False,
        shortcut: bool = True,
        interpolation_mode: str = "nearest",
    ) -> None:
        super().__init__()
        self.factor = 2
        self.interpolate = interpolate
        self.interpolation_mode = interpolation_mode
        self.shortcut = shortcut
        self.repeats = out_channels * self.factor**2 // in_channels
        if shortcut and (self.repeats < 1 or out_channels * self.factor**2 % in_channels):
            raise ValueError(f"DCUpBlock2d shortcut needs 4*out_channels divisible by in_channels ({in_channels}, {out_channels})")
        conv_out = out_channels if interpolate else out_channels * self.factor**2
        self.conv = nn.Conv2d(in_channels, conv_out, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.interpolate:
            h = self.conv(F.interpolate(x, scale_factor=self.factor, mode=self.interpolation_mode))
        else:
            h = F.pixel_shuffle(self.conv(x), self.factor)
        if self.shortcut:
            y = x.repeat_interleave(self.repeats, dim=1)
            h = h + F.pixel_shuffle(y, self.factor)
        return h
