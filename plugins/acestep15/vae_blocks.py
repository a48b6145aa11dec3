"""Building blocks of the Oobleck VAE (diffusers ``AutoencoderOobleck`` layout and state-dict names).

Facts (diffusers ``models/autoencoders/autoencoder_oobleck.py``; the key names also read by third-party ACE-Step 1.5
ports from the released ``vae/diffusion_pytorch_model.safetensors``):

- Every convolution is weight-normalised as ``torch.nn.utils.weight_norm`` stores it: ``weight_g`` (the norm, one
  value per slice of dim 0 of the stored weight: per output channel for Conv1d, per *input* channel for
  ConvTranspose1d, whose weight is stored ``[in, out, k]``), ``weight_v`` (the direction, the weight's shape) and
  ``bias``; the effective weight is ``g * v / ||v||`` with the norm over every dim but 0.
- ``Snake1d``: parameters ``alpha`` and ``beta`` ``[1, C, 1]`` in log scale (zeros at init);
  ``y = x + sin(exp(alpha) * x)^2 / (exp(beta) + 1e-9)``.
- Residual unit (dilation d): snake1 → conv1 (k 7, dilation d, same padding) → snake2 → conv2 (k 1), added to the
  input (centre-cropped when shorter).
- Encoder block: residual units with dilations 1, 3, 9 at the input width → snake1 → conv1 (k 2s, stride s,
  padding ceil(s/2)) to the output width.
- Decoder block: snake1 → conv_t1 (transposed, k 2s, stride s, padding ceil(s/2)) to the output width → residual
  units with dilations 1, 3, 9.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Snake1d", "WNConv1d", "WNConvTranspose1d", "ResidualUnit", "EncoderBlock", "DecoderBlock"]


class _WeightNorm(nn.Module):
    """Weight-normalised convolution: parameters ``weight_g``, ``weight_v`` (and ``bias``); ``weight`` derived."""

    def _init_from(self, conv: nn.Module) -> None:
        """Take ``conv``'s default initialisation: ``v`` = its weight, ``g`` = its norm (the effective weight is
        the conv's own, as ``weight_norm`` leaves it)."""
        v = conv.weight.detach()
        norm = torch.linalg.vector_norm(v, dim=tuple(range(1, v.dim())), keepdim=True)
        # registration order = torch.nn.utils.weight_norm's state-dict order: bias, weight_g, weight_v
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone())
        self.weight_g = nn.Parameter(norm.clone())
        self.weight_v = nn.Parameter(v.clone())

    @property
    def weight(self) -> torch.Tensor:
        """The effective weight ``g * v / ||v||`` (norm over every dim but 0)."""
        v = self.weight_v
        norm = torch.linalg.vector_norm(v, dim=tuple(range(1, v.dim())), keepdim=True)
        return v * (self.weight_g / norm)


class WNConv1d(_WeightNorm):
    """Weight-normalised ``Conv1d`` (keys ``weight_g`` [out,1,1], ``weight_v`` [out,in,k], ``bias`` [out])."""

    def __init__(self, cin: int, cout: int, kernel_size: int, *, stride: int = 1, dilation: int = 1,
                 padding: int = 0, bias: bool = True):
        super().__init__()
        self.stride, self.dilation, self.padding = stride, dilation, padding
        self._init_from(nn.Conv1d(cin, cout, kernel_size, bias=bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.weight, self.bias, stride=self.stride, padding=self.padding, dilation=self.dilation)


class WNConvTranspose1d(_WeightNorm):
    """Weight-normalised ``ConvTranspose1d`` (keys ``weight_g`` [in,1,1], ``weight_v`` [in,out,k], ``bias`` [out])."""

    def __init__(self, cin: int, cout: int, kernel_size: int, *, stride: int, padding: int):
        super().__init__()
        self.stride, self.padding = stride, padding
        self._init_from(nn.ConvTranspose1d(cin, cout, kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose1d(x, self.weight, self.bias, stride=self.stride, padding=self.padding)


class Snake1d(nn.Module):
    """Snake activation with log-scale ``alpha`` (frequency) and ``beta`` (amplitude), each ``[1, C, 1]``."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(1, channels, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = torch.exp(self.alpha)
        beta = torch.exp(self.beta)
        return x + torch.sin(alpha * x).pow(2) / (beta + 1e-9)


class ResidualUnit(nn.Module):
    """snake1 → conv1 (k 7, dilation) → snake2 → conv2 (k 1), plus the input."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.snake1 = Snake1d(channels)
        self.conv1 = WNConv1d(channels, channels, 7, dilation=dilation, padding=3 * dilation)
        self.snake2 = Snake1d(channels)
        self.conv2 = WNConv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.snake2(self.conv1(self.snake1(x))))
        crop = (x.shape[-1] - y.shape[-1]) // 2
        if crop > 0:
            x = x[..., crop:-crop]
        return x + y


class EncoderBlock(nn.Module):
    """Three residual units (dilations 1, 3, 9) at ``cin``, snake, strided conv to ``cout`` (÷ stride)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.res_unit1 = ResidualUnit(cin, 1)
        self.res_unit2 = ResidualUnit(cin, 3)
        self.res_unit3 = ResidualUnit(cin, 9)
        self.snake1 = Snake1d(cin)
        self.conv1 = WNConv1d(cin, cout, 2 * stride, stride=stride, padding=math.ceil(stride / 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.res_unit3(self.res_unit2(self.res_unit1(x)))
        return self.conv1(self.snake1(x))


class DecoderBlock(nn.Module):
    """Snake, transposed conv ``cin`` → ``cout`` (× stride), three residual units (dilations 1, 3, 9) at ``cout``."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.snake1 = Snake1d(cin)
        self.conv_t1 = WNConvTranspose1d(cin, cout, 2 * stride, stride=stride, padding=math.ceil(stride / 2))
        self.res_unit1 = ResidualUnit(cout, 1)
        self.res_unit2 = ResidualUnit(cout, 3)
        self.res_unit3 = ResidualUnit(cout, 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_t1(self.snake1(x))
        return self.res_unit3(self.res_unit2(self.res_unit1(x)))
