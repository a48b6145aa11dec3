"""Finite scalar quantization (Mentzer et al., 2023) in the residual form the ACE-Step 1.5 tokenizer uses.

For ``levels`` ``L_d`` (here [8, 8, 8, 5, 5, 5], 64,000 codes) each of the ``d`` channels is bounded and rounded:

    half_l = (L - 1) * (1 + eps) / 2;  offset = 0.5 if L is even else 0;  shift = atanh(offset / half_l)
    bounded = tanh(z + shift) * half_l - offset
    code = round(bounded) / (L // 2)              # straight-through gradient; values in [-1, 1]

A code vector's index is ``sum_d (code_d * (L_d // 2) + L_d // 2) * prod_{e<d} L_e``.

:class:`ResidualFSQ` holds only ``project_in`` (dim -> d) and ``project_out`` (d -> dim), both with bias, the
state-dict layout of vector-quantize-pytorch's ``ResidualFSQ``; quantizer ``q`` works on the residual scaled by
``(L - 1)^-q`` (quantizer 0: scale 1). The level tables are plain tensors, not buffers (not in the state dict).
"""
from __future__ import annotations

import math

import torch
from torch import nn

BOUND_EPS = 1e-3


def _levels(levels: list[int], device: torch.device | None) -> torch.Tensor:
    return torch.tensor(levels, dtype=torch.float32, device=device)


def fsq_quantize(z: torch.Tensor, levels: list[int]) -> torch.Tensor:
    """``(..., d)`` -> the quantized codes ``(..., d)`` in [-1, 1], float32, straight-through in backward."""
    lv = _levels(levels, z.device)
    half_l = (lv - 1) * (1 + BOUND_EPS) / 2
    offset = torch.where(lv % 2 == 0, 0.5, 0.0)
    shift = torch.atanh(offset / half_l)
    bounded = torch.tanh(z.float() + shift) * half_l - offset
    rounded = bounded + (bounded.round() - bounded).detach()
    return rounded / torch.div(lv, 2, rounding_mode="floor")


def codes_to_indices(codes: torch.Tensor, levels: list[int]) -> torch.Tensor:
    """``(..., d)`` codes in [-1, 1] -> ``(...)`` int64 indices in ``[0, prod(levels))``."""
    lv = _levels(levels, codes.device)
    half = torch.div(lv, 2, rounding_mode="floor")
    basis = torch.cumprod(torch.cat((lv.new_ones(1), lv[:-1])), 0)
    return ((codes.float() * half + half) * basis).sum(-1).round().to(torch.int64)


def indices_to_codes(indices: torch.Tensor, levels: list[int]) -> torch.Tensor:
    """``(...)`` indices -> ``(..., d)`` float32 codes (the inverse of :func:`codes_to_indices`)."""
    lv = torch.tensor(levels, dtype=torch.int64, device=indices.device)
    basis = torch.cumprod(torch.cat((lv.new_ones(1), lv[:-1])), 0)
    digits = (indices.to(torch.int64)[..., None] // basis) % lv
    half = torch.div(lv, 2, rounding_mode="floor")
    return (digits - half).float() / half.float()


class ResidualFSQ(nn.Module):
    """``forward(x (B, G, dim))`` -> ``(quantized (B, G, dim), indices (B, G, num_quantizers))``."""

    def __init__(self, dim: int, levels: list[int], num_quantizers: int = 1) -> None:
        super().__init__()
        self.levels = list(levels)
        self.num_quantizers = int(num_quantizers)
        self.project_in = nn.Linear(dim, len(levels))
        self.project_out = nn.Linear(len(levels), dim)

    @property
    def codebook_size(self) -> int:
        return math.prod(self.levels)

    def _scales(self, device: torch.device) -> list[torch.Tensor]:
        lv = _levels(self.levels, device)
        return [(lv - 1) ** -q for q in range(self.num_quantizers)]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        residual = self.project_in(x).float()
        total = torch.zeros_like(residual)
        indices = []
        for scale in self._scales(x.device):
            codes = fsq_quantize(residual / scale, self.levels)
            step = codes * scale
            residual = residual - step.detach()
            total = total + step
            indices.append(codes_to_indices(codes, self.levels))
        return self.project_out(total.to(x.dtype)), torch.stack(indices, dim=-1)

    def get_output_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """``(B, G, num_quantizers)`` indices -> ``(B, G, dim)`` (what the LM's audio codes decode to)."""
        total = None
        for q, scale in enumerate(self._scales(indices.device)):
            step = indices_to_codes(indices[..., q], self.levels) * scale
            total = step if total is None else total + step
        return self.project_out(total.to(self.project_out.weight.dtype))
