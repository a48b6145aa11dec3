"""The strict state-dict load: exact sentences for missing, unexpected and mis-shaped keys, a real safetensors
file loaded into a model built on the meta device."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from audiotrain.errors import UserError
from audiotrain.models.state_dict import (StateDictMismatch, check_state_dict, compare, load_strict,
                                         mismatch_message)


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5), nn.Linear(5, 2))


def test_exact_file_loads_into_a_meta_model(tmp_path):
    src = net()
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "w.safetensors"))
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5), nn.Linear(5, 2))
    out = load_strict(model, load_file(str(tmp_path / "w.safetensors")), "w.safetensors", "the toy", "fix", assign=True)
    assert out is model and all(p.device.type == "cpu" for p in model.parameters())
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in model.state_dict().items())
    x = torch.randn(3, 4)
    assert torch.equal(model(x), src(x))


def test_one_sentence_names_counts_first_keys_and_the_fix():
    state = dict(net().state_dict())
    state.pop("1.bias")
    state["2.weight"] = torch.zeros(3, 5)
    state["9.weight"] = torch.zeros(1)
    msg = mismatch_message(net(), state, "w.safetensors", "the toy model", "give the toy's own weights")
    assert msg == ("w.safetensors does not match the toy model: 1 missing keys (e.g. 1.bias); 1 unexpected keys "
                   "(e.g. 9.weight); 1 shape mismatches (file vs model, e.g. 2.weight [3, 5] vs [2, 5]); "
                   "give the toy's own weights.")
    with pytest.raises(StateDictMismatch) as e:
        check_state_dict(net(), state, "w.safetensors", "the toy model", "give the toy's own weights")
    assert str(e.value) == msg and isinstance(e.value, UserError)
    assert mismatch_message(net(), net().state_dict(), "w", "t", "f") is None


def test_more_than_three_keys_are_cut_with_an_ellipsis():
    msg = mismatch_message(net(), {}, "empty.safetensors", "the toy", "give its weights")
    assert msg == ("empty.safetensors does not match the toy: 6 missing keys (e.g. 0.bias, 0.weight, 1.bias, ...); "
                   "give its weights.")


def test_a_mismatch_never_half_loads():
    model = net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = {k: torch.ones_like(v) for k, v in model.state_dict().items()}
    state["0.weight"] = torch.ones(4, 4)
    with pytest.raises(StateDictMismatch):
        load_strict(model, state, "w", "t", "f")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_the_expected_side_may_be_a_mapping_of_tensors():
    """Part of a model (e.g. an adapter's weights) checked with the same sentence; meta tensors carry the shapes."""
    with torch.device("meta"):
        expected = {k: v for k, v in net().state_dict().items() if k.startswith("2.")}
    state = {"2.weight": torch.zeros(2, 4), "0.weight": torch.zeros(5, 4)}
    found = compare(expected, state)
    assert (found.missing, found.unexpected, found.shapes) == (["2.bias"], ["0.weight"], ["2.weight [2, 4] vs [2, 5]"])
    assert mismatch_message(expected, state, "model.init_from=a.safetensors", "this run's head", "give its head") == (
        "model.init_from=a.safetensors does not match this run's head: 1 missing keys (e.g. 2.bias); 1 unexpected "
        "keys (e.g. 0.weight); 1 shape mismatches (file vs model, e.g. 2.weight [2, 4] vs [2, 5]); give its head.")
    assert not compare(expected, {k: torch.zeros(v.shape) for k, v in expected.items()})
    check_state_dict(expected, {k: torch.zeros(v.shape) for k, v in expected.items()}, "w", "t", "f")
