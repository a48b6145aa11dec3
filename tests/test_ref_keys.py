"""The reference key lists in tests/ref_keys/ are whole and self-consistent: each file's counts agree with its
own keys and shapes (a truncated or hand-edited copy fails here, not as a puzzling layout mismatch)."""
from __future__ import annotations

import math

import pytest

from tests.ref_keys import FOLDER, ref_keys

NAMES = sorted(p.stem for p in FOLDER.glob("*.json"))


def test_the_lists_the_tests_and_the_next_plugins_need_are_here():
    assert {"acestep_dcae", "acestep_transformer", "acestep_vocoder", "valle_ar_nar_full", "tortoise_autoregressive",
            "tortoise_dvae", "songgen_mixed_pro_decoder", "songgen_mixed_pro_composite_partial",
            "acestep15_dit", "acestep15_xl_dit"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_counts_agree_with_the_keys_and_shapes(name):
    ref = ref_keys(name)
    keys = ref["keys"]
    assert len(keys) == ref["num_keys"]
    assert all(isinstance(s, list) and all(isinstance(d, int) and d >= 0 for d in s) for s in keys.values())
    assert sum(math.prod(s) for s in keys.values()) == ref["state_dict_numel"]
    buffers = set(ref["buffer_keys"])
    assert buffers <= set(keys)
    shared = sum(math.prod(keys[g[0]]) * (len(g) - 1) for g in ref["tied_parameter_groups"])
    assert all(len({tuple(keys[k]) for k in g}) == 1 for g in ref["tied_parameter_groups"])
    assert sum(math.prod(s) for k, s in keys.items() if k not in buffers) - shared == ref["num_params"]
    assert ref["source"] and isinstance(ref["config"], dict)
