"""The FSQ of the ACE-Step 1.5 tokenizer: 64,000 codes for levels [8,8,8,5,5,5], indices and codes invert each
other, quantized values sit on the level grid, and gradients pass straight through."""
from __future__ import annotations

import torch

from audiotrain_acestep15.fsq import ResidualFSQ, codes_to_indices, fsq_quantize, indices_to_codes

LEVELS = [8, 8, 8, 5, 5, 5]


def test_every_index_round_trips_through_its_code():
    indices = torch.arange(64_000)
    codes = indices_to_codes(indices, LEVELS)
    assert codes.shape == (64_000, 6) and codes.min() == -1 and codes.max() <= 1
    assert torch.equal(codes_to_indices(codes, LEVELS), indices)


def test_quantized_values_are_on_the_grid_and_use_every_level():
    z = torch.randn(20_000, 6, generator=torch.Generator().manual_seed(0)) * 3
    codes = fsq_quantize(z, LEVELS)
    for d, levels in enumerate(LEVELS):
        values = torch.unique(codes[:, d] * (levels // 2))
        assert values.tolist() == list(range(-(levels // 2), levels - levels // 2))  # 8: -4..3, 5: -2..2


def test_residual_fsq_decodes_its_own_indices_and_passes_gradients():
    torch.manual_seed(0)
    q = ResidualFSQ(16, LEVELS, 1)
    assert q.codebook_size == 64_000
    x = torch.randn(2, 7, 16, requires_grad=True)
    out, indices = q(x)
    assert out.shape == (2, 7, 16) and indices.shape == (2, 7, 1)
    torch.testing.assert_close(q.get_output_from_indices(indices), out)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
