"""Preset names and the seeded tiny build: one sentence for an unknown preset, deep copies, the same random
weights every time, and the caller's RNG left alone."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from audiotrain.errors import UserError
from audiotrain.models.presets import preset_copy, preset_problems, require_preset, seeded

PRESETS = {"tiny": {"dim": 4, "layers": [1, 2]}, "full": {"dim": 1024, "layers": [8, 8]}}


def test_unknown_preset_is_one_sentence_with_the_choices():
    assert preset_problems("tiny", PRESETS) == []
    assert preset_problems("huge", PRESETS) == ["model.preset=huge is unknown: use one of tiny, full."]
    assert require_preset("full", PRESETS) == "full"
    with pytest.raises(UserError, match=r"^model\.preset=None is unknown: use one of tiny, full\.$"):
        require_preset(None, PRESETS)


def test_preset_copy_is_deep_and_names_the_system():
    p = preset_copy("tiny", PRESETS, "Toy")
    p["layers"].append(3)
    assert PRESETS["tiny"]["layers"] == [1, 2]
    with pytest.raises(KeyError, match=r"unknown Toy preset 'huge'; known: \['full', 'tiny'\]"):
        preset_copy("huge", PRESETS, "Toy")


def test_seeded_build_is_reproducible_and_leaves_the_callers_rng():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = seeded(lambda: nn.Linear(3, 2))
    assert torch.equal(torch.rand(3), expected_next)  # the caller's stream went on as if nothing happened
    b = seeded(lambda: nn.Linear(3, 2))
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    torch.manual_seed(0)
    assert torch.equal(nn.Linear(3, 2).weight, a.weight)  # seed 0 unless told
    assert not torch.equal(seeded(lambda: nn.Linear(3, 2), seed=1).weight, a.weight)
