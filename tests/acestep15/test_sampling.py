"""Sampling the tiny ACE-Step 1.5 DiT: the turbo and base/sft time tables, Euler to x0, APG and CFG, shapes and
determinism, and a padded batch sampling each item as it samples alone."""
from __future__ import annotations

import pytest
import torch

from audiotrain.errors import UserError
from audiotrain_acestep15.objective import TURBO_SHIFT3_TIMESTEPS
from audiotrain_acestep15.sampling import (Conditioning, MomentumBuffer, _euler, apg, guided_timesteps,
                                           initial_noise, sample_guided, sample_turbo, shift_time, turbo_timesteps)
from tests.acestep15.dit_inputs import conditions, latents, tiny_model


def test_time_tables():
    assert turbo_timesteps().tolist() == pytest.approx(TURBO_SHIFT3_TIMESTEPS)
    formula = shift_time(1 - torch.arange(8) / 8, 3.0)
    assert (formula - turbo_timesteps()).abs().max() < 1e-4  # the released table is the formula, rounded
    assert turbo_timesteps(8, 1.0).tolist() == pytest.approx([1 - i / 8 for i in range(8)])
    assert guided_timesteps(4).tolist() == pytest.approx([1, 0.75, 0.5, 0.25, 0])
    shifted = guided_timesteps(30, 3.0)
    assert len(shifted) == 31 and float(shifted[0]) == 1 and float(shifted[-1]) == 0
    assert bool((shifted[1:] < shifted[:-1]).all())
    with pytest.raises(UserError, match="steps=0 must be at least 1"):
        turbo_timesteps(0)


@pytest.mark.parametrize("times", [turbo_timesteps(), guided_timesteps(5, 2.0)])
def test_euler_with_the_exact_velocity_lands_on_the_data(times):
    data = torch.randn(2, 10, 64)
    noise = torch.randn(2, 10, 64)
    out = _euler(lambda x, t: noise - data, noise, times, len(times) == 8, None)
    torch.testing.assert_close(out, data)


def test_apg_limits():
    g = torch.Generator().manual_seed(0)
    c, u = torch.randn(2, 12, 64, generator=g), torch.randn(2, 12, 64, generator=g)
    plain = apg(c, u, 7.0, None, norm_threshold=0.0, eta=1.0)
    torch.testing.assert_close(plain, c + 6.0 * (c - u))  # no clamp, no projection: CFG
    orth = apg(c, u, 7.0, None, norm_threshold=0.0, eta=0.0) - c
    assert (orth * c).sum(dim=1).abs().max() < 1e-3  # eta 0 keeps only the part orthogonal to v_cond
    clamped = apg(c, u * 100, 7.0, None, norm_threshold=2.5, eta=1.0) - c
    assert float(clamped.norm(dim=1).max()) <= 6.0 * 2.5 + 1e-3
    buffer = MomentumBuffer(-0.75)
    first = apg(c, u, 3.0, buffer, 0.0, 1.0)
    second = apg(c, u, 3.0, buffer, 0.0, 1.0)
    torch.testing.assert_close(first - c, 2.0 * (c - u))
    torch.testing.assert_close(second - c, 2.0 * 0.25 * (c - u))  # d - 0.75 d


def _cond(model, b=1, t=18):
    enc, mask = conditions(model, [(9, 5), (6, 3)][:b])
    _, ctx = latents(b, t)
    return Conditioning(enc.detach(), mask, ctx)


def test_turbo_sampling_shapes_and_determinism():
    model = tiny_model()
    cond = _cond(model, 2)
    steps = []
    a = sample_turbo(model, initial_noise((2, 18, 64), torch.Generator().manual_seed(0)), cond,
                     progress=lambda i, n: steps.append((i, n)))
    b = sample_turbo(model, initial_noise((2, 18, 64), torch.Generator().manual_seed(0)), cond)
    c = sample_turbo(model, initial_noise((2, 18, 64), torch.Generator().manual_seed(1)), cond)
    assert a.shape == (2, 18, 64) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert steps == [(i, 8) for i in range(1, 9)]


def test_turbo_sampling_a_padded_batch_matches_each_item_alone():
    model = tiny_model()
    cond = _cond(model, 2)
    cond.attention_mask = torch.ones(2, 18)
    cond.attention_mask[1, 11:] = 0
    noise = initial_noise((2, 18, 64), torch.Generator().manual_seed(0))
    both = sample_turbo(model, noise, cond)
    for i, n in enumerate((18, 11)):
        s = int(cond.encoder_attention_mask[i].sum())
        alone = sample_turbo(model, noise[i:i + 1, :n], Conditioning(
            cond.encoder_hidden_states[i:i + 1, :s], None, cond.context_latents[i:i + 1, :n]))
        torch.testing.assert_close(both[i:i + 1, :n], alone, rtol=1e-4, atol=1e-4)
    assert both[1, 11:].abs().max() == 0


def test_guided_sampling_apg_and_cfg():
    model = tiny_model()
    cond = _cond(model)
    noise = initial_noise((1, 18, 64), torch.Generator().manual_seed(2))
    apg7 = sample_guided(model, noise, cond, steps=6)
    cfg7 = sample_guided(model, noise, cond, steps=6, guidance_mode="cfg")
    assert apg7.shape == (1, 18, 64) and torch.isfinite(apg7).all() and not torch.equal(apg7, cfg7)
    assert torch.equal(apg7, sample_guided(model, noise, cond, steps=6))
    # guidance 1 is the conditional branch alone, under either rule
    one = sample_guided(model, noise, cond, steps=6, guidance=1.0, guidance_mode="cfg")
    with torch.no_grad():
        alone = _euler(lambda x, t: model.velocity(x, t, cond.encoder_hidden_states, cond.context_latents, None,
                                                   cond.encoder_attention_mask), noise, guided_timesteps(6), False,
                       None)
    torch.testing.assert_close(one, alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sample_guided(model, noise, cond, steps=6, guidance=1.0), one, rtol=1e-5, atol=1e-5)
    with pytest.raises(UserError, match="guidance_mode=adg is unknown"):
        sample_guided(model, noise, cond, guidance_mode="adg")
