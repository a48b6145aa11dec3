"""The model line a run prints names the adapted modules briefly: a handful by name, many by count and kind."""
from __future__ import annotations

from audiotrain.train.model_setup import targets_line


def test_a_few_targets_are_named_and_many_are_counted_by_kind():
    assert targets_line(["q_proj", "v_proj"]) == "q_proj, v_proj"
    patterns = ["speaker_embedder", "linear_q", "linear_k", "linear_v", "to_q", "to_k", "to_v", "to_out.0", "proj_in"]
    assert targets_line(patterns) == ", ".join(patterns)  # patterns, however many, are named
    names = [f"decoder.layers.{i}.{a}.{p}" for i in range(24) for a in ("self_attn", "cross_attn")
             for p in ("q_proj", "k_proj", "v_proj", "o_proj")]
    line = targets_line(names)
    assert line == ("192 layers: cross_attn.k_proj, cross_attn.o_proj, cross_attn.q_proj, cross_attn.v_proj, "
                    "self_attn.k_proj, self_attn.o_proj, self_attn.q_proj, self_attn.v_proj")
