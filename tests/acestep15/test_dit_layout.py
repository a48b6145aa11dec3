"""The ACE-Step 1.5 DiT built on the meta device has the released checkpoints' layout exactly: every key, shape
and the parameter counts of the 2B (turbo/base/sft) and XL reference lists, submodule by submodule."""
from __future__ import annotations

import math

import pytest
import torch

from audiotrain_acestep15.dit import build_dit
from audiotrain_acestep15.dit_config import PRESETS, DiTConfig, preset_config
from audiotrain.errors import UserError
from tests.ref_keys import ref_keys

CASES = [("acestep15_dit", "turbo", 2_393_872_518, 677), ("acestep15_dit", "base", 2_393_872_518, 677),
         ("acestep15_dit", "sft", 2_393_872_518, 677), ("acestep15_xl_dit", "xl-base", 4_987_310_726, 829),
         ("acestep15_xl_dit", "xl-sft", 4_987_310_726, 829), ("acestep15_xl_dit", "xl-turbo", 4_987_310_726, 829)]


@pytest.mark.parametrize("ref_name,preset,params,num_keys", CASES)
def test_meta_build_matches_the_reference_keys_shapes_and_counts(ref_name, preset, params, num_keys):
    ref = ref_keys(ref_name)
    with torch.device("meta"):
        model = build_dit(preset)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(ref["keys"]) - set(ours)) == []  # missing
    assert sorted(set(ours) - set(ref["keys"])) == []  # unexpected
    assert {k: v for k, v in ours.items() if v != ref["keys"][k]} == {}
    assert list(ours) == list(ref["keys"])  # the state-dict order too
    assert len(ours) == ref["num_keys"] == num_keys
    assert sum(p.numel() for p in model.parameters()) == ref["num_params"] == params
    assert not list(model.buffers())  # no persistent buffers, no non-persistent ones either
    for name, count in ref["submodule_params"].items():
        part = model.get_parameter(name) if name == "null_condition_emb" else model.get_submodule(name)
        got = part.numel() if isinstance(part, torch.nn.Parameter) else sum(p.numel() for p in part.parameters())
        assert got == count, name


def test_presets_hold_the_released_config_values():
    ref = ref_keys("acestep15_dit")["config"]
    cfg = preset_config("turbo")
    for key, value in ref.items():
        if key != "tie_word_embeddings":
            assert getattr(cfg, key) == value, key
    xl = preset_config("xl-base")
    for key, value in ref_keys("acestep15_xl_dit")["config"].items():
        if key not in ("tie_word_embeddings", "model_version"):
            assert getattr(xl, key) == value, key
    assert (cfg.timbre_prepend_cls, xl.timbre_prepend_cls) == (False, True)
    assert (xl.enc_hidden, xl.hidden_size, cfg.enc_hidden) == (2048, 2560, 2048)
    assert set(PRESETS) == {"tiny", "turbo", "base", "sft", "xl-base", "xl-sft", "xl-turbo"}


def test_tiny_is_small_and_bad_settings_are_one_sentence():
    model = build_dit("tiny")
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    with pytest.raises(UserError, match="model.preset=huge is unknown"):
        preset_config("huge")
    with pytest.raises(UserError, match="hidden_sise is not a DiT setting"):
        preset_config("tiny", hidden_sise=3)
    with pytest.raises(UserError, match="num_attention_heads=5 is not a multiple of num_key_value_heads=2"):
        DiTConfig(num_attention_heads=5, num_key_value_heads=2)


@pytest.mark.parametrize("preset,per_rank,linears", [("turbo", 688_128, 192), ("xl-base", 1_310_720, 256)])
def test_the_decoder_attention_projections_give_the_published_lora_sizes(preset, per_rank, linears):
    """LoRA on q/k/v/o of the decoder's self- and cross-attention: r * (in + out) per Linear, 44,040,192 at r 64
    for 2B (as the released trainer logs) and 83.9 M for XL."""
    with torch.device("meta"):
        decoder = build_dit(preset).decoder
    hits = [m for name, m in decoder.named_modules() if name.rsplit(".", 1)[-1] in ("q_proj", "k_proj", "v_proj",
                                                                                    "o_proj")]
    assert len(hits) == linears
    assert sum(m.in_features + m.out_features for m in hits) == per_rank
