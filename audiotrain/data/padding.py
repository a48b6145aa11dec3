"""Batch padding: variable-length per-example tensors → one right-padded batch tensor, with lengths and a mask."""
from __future__ import annotations

from typing import Sequence

import torch


def pad_stack(tensors: Sequence[torch.Tensor], dim: int = -1, value: float = 0.0) -> torch.Tensor:
    """Right-pad each tensor along ``dim`` (of the per-example tensor) to the longest, then stack on a new
    first axis. Every other axis must already agree."""
    if not tensors:
        raise ValueError("pad_stack needs at least one tensor")
    longest = max(t.shape[dim] for t in tensors)
    out = []
    for t in tensors:
        pad = longest - t.shape[dim]
        if pad:
            shape = list(t.shape)
            shape[dim] = pad
            t = torch.cat([t, t.new_full(shape, value)], dim=dim)
        out.append(t)
    return torch.stack(out)


def lengths_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(B, width) float mask: 1 on the first ``lengths[b]`` positions of row b, 0 after."""
    return (torch.arange(width, device=lengths.device)[None, :] < lengths.view(-1, 1)).float()


def pad_batch(tensors: Sequence[torch.Tensor], dim: int = -1, value: float = 0.0
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(padded, lengths, mask)``: the :func:`pad_stack` batch, each example's own length along ``dim``
    (LongTensor (B,)) and the matching (B, longest) mask."""
    padded = pad_stack(tensors, dim=dim, value=value)
    lengths = torch.tensor([t.shape[dim] for t in tensors], dtype=torch.long)
    axis = dim if dim < 0 else dim + 1  # the batch axis comes first in ``padded``
    return padded, lengths, lengths_mask(lengths, padded.shape[axis])
