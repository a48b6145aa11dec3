"""LoRA on the tiny ACE-Step transformer: counts, round trips (PEFT and ACE-Step format), merge."""
from __future__ import annotations

import math

import pytest
import torch

from audiotrain.lora import adapter as lora
from audiotrain_acestep import adapter_format
from audiotrain_acestep.backbone import DEFAULT_TARGETS
from audiotrain_acestep.presets import PRESETS
from audiotrain_acestep.transformer import ACEStepTransformer2DModel


def make_model(seed: int = 0) -> ACEStepTransformer2DModel:
    torch.manual_seed(seed)
    return ACEStepTransformer2DModel(dict(PRESETS["tiny"])).eval()


def inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    c = PRESETS["tiny"]
    return dict(hidden_states=torch.randn(2, 8, 16, 5, generator=g), attention_mask=torch.ones(2, 5),
                encoder_text_hidden_states=torch.randn(2, 4, c["text_embedding_dim"], generator=g),
                text_attention_mask=torch.ones(2, 4), speaker_embeds=torch.randn(2, c["speaker_embedding_dim"], generator=g),
                lyric_token_idx=torch.randint(0, 6693, (2, 6), generator=g), lyric_mask=torch.ones(2, 6),
                timestep=torch.tensor([300.0, 800.0]))


def randomise_lora(model, seed=3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.mark.parametrize("r", [4, 16])
def test_trainable_count_matches_formula(r):
    model = make_model()
    s = lora.LoRASettings(r=r, alpha=32, target_modules=list(DEFAULT_TARGETS))
    expected = lora.expected_trainable(model, s)
    lora.attach(model, s)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # by hand: 2 blocks × 2 attentions × 4 Linear(32→32) + 3 lyric Linear(32→32) + speaker Linear(16→32)
    by_hand = r * ((2 * 2 * 4 + 3) * (32 + 32) + (16 + 32))
    assert trainable == expected == by_hand


def test_v1_lora_param_counts_match_the_spec():
    with torch.device("meta"):
        model = ACEStepTransformer2DModel(dict(PRESETS["v1-3.5b"]))
    targets = ["linear_q", "linear_k", "linear_v", "to_q", "to_k", "to_v", "to_out.0", "speaker_embedder"]
    for r, millions in [(16, 16.4), (64, 65.5), (256, 261.9)]:
        n = lora.expected_trainable(model, lora.LoRASettings(r=r, alpha=32, target_modules=targets))
        assert abs(n / 1e6 - millions) < 0.1, (r, n)


def test_rslora_scale():
    s = lora.LoRASettings(r=256, alpha=32, use_rslora=True)
    assert s.scale == pytest.approx(2.0)
    assert lora.LoRASettings(r=16, alpha=32).scale == 2.0


def test_unknown_target_lists_existing_names():
    model = make_model()
    with pytest.raises(lora.LoRAConfigError) as e:
        lora.attach(model, lora.LoRASettings(r=4, alpha=4, target_modules=["to_q", "qkv_proj"]))
    msg = str(e.value)
    assert "'qkv_proj'" in msg and "to_q" in msg and "linear_k" in msg and "speaker_embedder" in msg


def test_peft_round_trip_is_bit_exact(tmp_path):
    s = lora.LoRASettings(r=8, alpha=16, target_modules=list(DEFAULT_TARGETS))
    a = lora.attach(make_model(), s)
    randomise_lora(a)
    with torch.no_grad():
        ref = a(**inputs()).sample
    lora.save_peft(a, s, tmp_path / "peft")
    s2, state = lora.load_peft(tmp_path / "peft")
    assert (s2.r, s2.alpha, s2.dropout, s2.use_rslora) == (s.r, s.alpha, s.dropout, s.use_rslora)
    assert sorted(s2.target_modules) == sorted(s.target_modules)
    b = lora.attach(make_model(), s2)
    lora.load_adapter_state(b, state)
    with torch.no_grad():
        out = b(**inputs()).sample
    assert torch.equal(ref, out)
    cfg = (tmp_path / "peft" / "adapter_config.json").read_text()
    assert '"r": 8' in cfg and '"lora_alpha": 16' in cfg


def test_acestep_format_keeps_rank_and_alpha(tmp_path):
    # rsLoRA scale 32/√16 = 8 is folded into the file's lora_B (tests/acestep/test_adapter_strength.py); a power
    # of two comes back bit for bit
    s = lora.LoRASettings(r=16, alpha=32, target_modules=list(DEFAULT_TARGETS), use_rslora=True)
    a = lora.attach(make_model(), s)
    randomise_lora(a)
    with torch.no_grad():
        ref = a(**inputs()).sample
    path = adapter_format.save(a, s, tmp_path / "acestep")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        keys = list(fh.keys())
        assert "lora_adapter_metadata" in fh.metadata()
    assert "transformer_blocks.0.attn.to_q.lora_A.weight" in keys  # diffusers layout: no prefix
    (tmp_path / "acestep" / "adapter_config.json").unlink()  # the header alone must carry the config
    s2, state = adapter_format.load(tmp_path / "acestep")
    assert (s2.r, s2.alpha, s2.use_rslora) == (16, 32, True)
    assert s2.scale == pytest.approx(32 / math.sqrt(16))
    b = lora.attach(make_model(), s2)
    lora.load_adapter_state(b, state)
    with torch.no_grad():
        assert torch.equal(ref, b(**inputs()).sample)


def test_merged_equals_unmerged():
    s = lora.LoRASettings(r=8, alpha=16, target_modules=list(DEFAULT_TARGETS))
    a = lora.attach(make_model(), s)
    randomise_lora(a)
    with torch.no_grad():
        ref = a(**inputs()).sample
        lora.merge(a)
        assert not any("lora_" in n for n, _ in a.named_parameters())
        assert set(a.state_dict()) == set(make_model().state_dict())
        out = a(**inputs()).sample
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert not torch.equal(out, make_model()(**inputs()).sample)  # the adapter did change the model
