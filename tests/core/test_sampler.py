"""ResumableSampler: per-epoch permutations, exact continuation, and the epoch-end resume case."""
from __future__ import annotations

import pytest

from audiotrain.data.sampler import ResumableSampler


def consume(sampler, n):
    out = []
    it = iter(sampler)
    for _ in range(n):
        try:
            i = next(it)
        except StopIteration:
            it = iter(sampler)
            i = next(it)
        sampler.advance(1)
        out.append(i)
    return out


@pytest.mark.parametrize("cut", [1, 3, 8, 9, 16])
def test_resume_anywhere_equals_uninterrupted(cut):
    full = consume(ResumableSampler(8, seed=3), 24)
    a = ResumableSampler(8, seed=3)
    first = consume(a, cut)
    b = ResumableSampler(8, seed=3)
    b.load_state_dict(a.state_dict())
    assert first + consume(b, 24 - cut) == full


def test_epochs_are_permutations_and_differ():
    s = ResumableSampler(8, seed=0)
    e0, e1 = consume(s, 8), consume(s, 8)
    assert sorted(e0) == sorted(e1) == list(range(8)) and e0 != e1


def test_changed_data_is_refused():
    s = ResumableSampler(8)
    consume(s, 3)
    with pytest.raises(ValueError, match="8 examples but the data now has 9"):
        ResumableSampler(9).load_state_dict(s.state_dict())
