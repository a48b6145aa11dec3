"""A LoRA run does not keep the cross-attention projections that ACE-Step's forward pass never reads."""
from __future__ import annotations

import torch

from audiotrain_acestep.attention import UNUSED_CROSS_ATTENTION, Attention
from audiotrain_acestep.backbone import DEFAULT_TARGETS, ACEStepBackbone
from audiotrain_acestep.presets import get_preset
from audiotrain_acestep.transformer import ACEStepTransformer2DModel

from tests.acestep.test_transformer import _batch


def _backbone(seed: int = 0) -> ACEStepBackbone:
    torch.manual_seed(seed)
    return ACEStepBackbone(ACEStepTransformer2DModel(get_preset("tiny")), {})


def _cross(backbone: ACEStepBackbone) -> list[Attention]:
    return [m for m in backbone.transformer.modules() if isinstance(m, Attention) and m.is_cross_attention]


def test_release_frees_exactly_the_unused_projections_and_changes_no_output():
    kept, released = _backbone(), _backbone()
    cross = _cross(released)
    dim = get_preset("tiny")["num_attention_heads"] * get_preset("tiny")["attention_head_dim"]
    expected = len(cross) * len(UNUSED_CROSS_ATTENTION) * (dim * dim + dim)
    assert cross and released.release_unused_weights(DEFAULT_TARGETS) == expected
    names = set(dict(released.named_parameters()))
    assert not any(part in n for n in names for part in UNUSED_CROSS_ATTENTION)
    assert len(dict(kept.named_parameters())) - len(names) == 2 * len(cross) * len(UNUSED_CROSS_ATTENTION)
    assert sum(p.numel() for p in kept.parameters()) - sum(p.numel() for p in released.parameters()) == expected
    batch = _batch()
    kept.eval(), released.eval()
    with torch.no_grad():
        assert torch.equal(kept.transformer(**batch).sample, released.transformer(**batch).sample)
    assert released.release_unused_weights(DEFAULT_TARGETS) == 0  # idempotent


def test_a_lora_target_naming_one_of_them_keeps_it():
    backbone = _backbone()
    freed = backbone.release_unused_weights([*DEFAULT_TARGETS, "add_q_proj"])
    for attn in _cross(backbone):
        assert isinstance(attn.add_q_proj, torch.nn.Linear)
        assert attn.add_k_proj is None and attn.add_v_proj is None and attn.to_add_out is None
    dim = get_preset("tiny")["num_attention_heads"] * get_preset("tiny")["attention_head_dim"]
    assert freed == len(_cross(backbone)) * 3 * (dim * dim + dim)
