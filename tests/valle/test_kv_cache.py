"""VALL-E's AR KV cache: the cached decode gives the uncached path's logits (to 1e-5) and codes, with and without LoRA."""
from __future__ import annotations

import pytest
import torch

from audiotrain_valle.ar_nar import ARNAR, LORA_TARGETS
from audiotrain_valle.llama import KVCache

A = 64  # the tiny preset's audio tokens; the stop token is A


def _tiny(seed: int = 0, **over) -> ARNAR:
    torch.manual_seed(seed)
    return ARNAR({"preset": "tiny", **over}).eval()


def _inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 256, (9,), generator=g), torch.randint(0, A, (6, 8), generator=g)


def _decode(model: ARNAR, use_cache: bool, steps: int = 24, seed: int = 3, stop_at: int | None = None):
    """Sampled AR codes (temperature 1) and the logits of every step."""
    phn, prom = _inputs()
    gen, seen = torch.Generator().manual_seed(seed), []

    def choose(logits: torch.Tensor) -> int:
        seen.append(logits)
        if stop_at is not None and len(seen) > stop_at:
            return model.stop_token
        return int(model._pick(logits, 1.0, gen))

    return model.ar_codes(phn, prom, 1, steps, choose, use_cache=use_cache), torch.stack(seen)


def _assert_same(model: ARNAR, **kw) -> torch.Tensor:
    cached, cached_logits = _decode(model, True, **kw)
    plain, plain_logits = _decode(model, False, **kw)
    assert torch.equal(cached, plain)
    assert cached_logits.shape == plain_logits.shape == (cached_logits.shape[0], A + 1)
    torch.testing.assert_close(cached_logits, plain_logits, rtol=0, atol=1e-5)
    return plain_logits


@pytest.mark.parametrize("unified", [False, True])
def test_cached_ar_gives_the_uncached_logits_and_codes(unified):
    model = _tiny(unified_position_ids=unified)
    logits = _assert_same(model)
    assert logits.shape[0] == 24 and logits.std(0).mean() > 0.01  # 24 steps whose logits change with the codes
    codes, steps = _decode(model, True, stop_at=5)
    assert codes.shape == (5,) and steps.shape[0] == 6  # the stop token ends the decode at once


def test_cached_ar_matches_with_lora_attached():
    from peft import LoraConfig, inject_adapter_in_model

    model = _tiny(seed=2)
    base, _ = _decode(model, False)
    targets = [*LORA_TARGETS, "self_attn.k_proj"]  # k_proj too: the cache must hold the adapted keys
    model = inject_adapter_in_model(LoraConfig(r=4, lora_alpha=8, target_modules=targets), model).eval()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    adapted = _assert_same(model)
    assert adapted.shape[0] == 24
    assert not torch.equal(_decode(model, True)[0], base)  # the adapter changes what the AR says


def test_generate_is_the_same_with_and_without_cache():
    model = _tiny(seed=4).train()
    phn, prom = _inputs(5)
    run = lambda c: model.generate(phn, prom, 0, max_ar_steps=16, ar_temperature=0.9, nar_temperature=0.5,  # noqa: E731
                                   generator=torch.Generator().manual_seed(11), use_cache=c)
    cached, plain = run(True), run(False)
    assert cached.shape == plain.shape and cached.shape[1] == 8 and 1 <= cached.shape[0] <= 16
    assert torch.equal(cached, plain) and model.training  # mode restored


def test_stack_cache_takes_several_new_tokens_and_refuses_padding():
    model = _tiny(seed=6).model
    torch.manual_seed(0)
    x, pos = torch.randn(2, 11, 32), torch.arange(11).repeat(2, 1)
    with torch.no_grad():
        full = model(x, pos)
        cache = KVCache(len(model.layers))
        parts = [model(x[:, a:b], pos[:, a:b], cache=cache) for a, b in ((0, 4), (4, 5), (5, 11))]
    assert len(cache) == 11
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="unpadded rows"):
        model(x, pos, lengths=torch.tensor([11, 7]), cache=KVCache(len(model.layers)))
