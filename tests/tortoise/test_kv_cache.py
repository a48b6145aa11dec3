"""TorToiSe's GPT-2 KV cache: cached mel-code sampling gives the uncached path's logits (to 1e-5) and codes, for a
batch, with top-p sampling, greedy, a stop token, and a LoRA (non-zero B) on the GPT-2 projections."""
from __future__ import annotations

import pytest
import torch

from audiotrain.models.presets import seeded
from audiotrain_tortoise.backbone import LORA_TARGETS
from audiotrain_tortoise.gpt2 import KVCache
from audiotrain_tortoise.unified_voice import UnifiedVoice, _draw

STOP = 8193


@pytest.fixture(scope="module")
def tiny() -> UnifiedVoice:
    return seeded(lambda: UnifiedVoice("tiny")).eval()


def _inputs(model: UnifiedVoice):
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        cond = model.conditioning_latents(torch.randn(2, 2, 80, 60, generator=g))
    return torch.randint(1, 200, (2, 7), generator=g), cond


def _decode(model: UnifiedVoice, use_cache: bool, steps: int = 12, stop_row0_at: int | None = None):
    """Codes of two rows sampled at temperature 0.9, top-p 0.9, and the logits of every step (steps, 2, C)."""
    text, cond = _inputs(model)
    gen, seen = torch.Generator().manual_seed(5), []

    def choose(logits: torch.Tensor) -> torch.Tensor:
        seen.append(logits)
        nxt = _draw(logits / 0.9, 0.9, gen)
        if stop_row0_at is not None and len(seen) > stop_row0_at:
            nxt[0] = STOP
        return nxt

    return model.sample_steps(text, cond, steps, choose, use_cache), torch.stack(seen)


def _assert_same(model: UnifiedVoice, **kw) -> torch.Tensor:
    cached, cached_logits = _decode(model, True, **kw)
    plain, plain_logits = _decode(model, False, **kw)
    assert len(cached) == len(plain) == 2 and all(torch.equal(a, b) for a, b in zip(cached, plain))
    assert cached_logits.shape == plain_logits.shape and cached_logits.shape[1:] == (2, 8194)
    torch.testing.assert_close(cached_logits, plain_logits, rtol=0, atol=1e-5)
    return plain_logits


def test_cached_sampling_gives_the_uncached_logits_and_codes(tiny):
    logits = _assert_same(tiny)
    assert logits.shape[0] == 12 and logits.std(0).mean() > 0.01
    codes, _ = _decode(tiny, True, stop_row0_at=4)
    assert [c.numel() for c in codes] == [4, 12]  # row 0 stopped, row 1 went on to max_codes
    _assert_same(tiny, stop_row0_at=4)
    text, cond = _inputs(tiny)
    greedy = [tiny.sample(text, cond, greedy=True, max_codes=10, use_cache=c) for c in (True, False)]
    assert all(torch.equal(a, b) and a.numel() == 10 for a, b in zip(*greedy))


def test_cached_sampling_matches_with_lora_attached():
    from peft import LoraConfig, inject_adapter_in_model

    model = seeded(lambda: UnifiedVoice("tiny")).eval()
    base, _ = _decode(model, True)
    model = inject_adapter_in_model(LoraConfig(r=4, lora_alpha=8, target_modules=list(LORA_TARGETS),
                                               fan_in_fan_out=True), model).eval()
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    assert any(".lora_B." in n for n, _ in model.gpt.h[0].attn.c_attn.named_parameters(prefix="c_attn"))
    _assert_same(model)
    assert not all(torch.equal(a, b) for a, b in zip(_decode(model, True)[0], base))  # the adapter is in play


def test_gpt2_cache_takes_several_positions_and_counts_them_against_the_context(tiny):
    gpt = tiny.gpt
    x = torch.randn(2, 9, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = gpt(x)
        cache = KVCache(len(gpt.h))
        parts = [gpt(x[:, a:b], cache=cache) for a, b in ((0, 3), (3, 4), (4, 9))]
    assert len(cache) == 9
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=f"{gpt.n_positions + 1} positions is longer"):
        gpt(x[:, :2], cache=_filled(gpt, gpt.n_positions - 1))


def _filled(gpt, positions: int) -> KVCache:
    cache = KVCache(len(gpt.h))
    with torch.no_grad():
        gpt(torch.zeros(1, positions, 64), cache=cache)
    return cache
