"""The ACE-Step 1.5 objective: the timestep law (max of two logit-normal draws), the turbo table only on request,
CFG dropout at 0.15 with the null embedding, the velocity target, and a loss over valid elements only."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from audiotrain.errors import UserError
from audiotrain_acestep15.objective import (TURBO_SHIFT3_TIMESTEPS, ObjectiveConfig, cfg_dropout,
                                            flow_matching_loss, masked_mse, sample_timesteps)
from tests.acestep15.dit_inputs import conditions, latents, tiny_model

N = 100_000


def _phi(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def test_timesteps_follow_the_max_of_two_logit_normal_draws():
    t = sample_timesteps(N, torch.Generator().manual_seed(0))
    assert t.shape == (N,) and t.dtype == torch.float32 and 0 < float(t.min()) and float(t.max()) < 1
    # P(t <= x) = Phi(logit(x) + 0.4)^2: median sigmoid(-0.4 + Phi^-1(sqrt(.5))) = 0.536, a quarter below 0.401
    assert abs(float(t.median()) - 0.5362) < 0.005
    assert abs(float((t <= 1 / (1 + math.exp(0.4))).float().mean()) - 0.25) < 0.005
    for x in (0.1, 0.3, 0.5, 0.7, 0.9):
        want = _phi(math.log(x / (1 - x)) + 0.4) ** 2
        assert abs(float((t <= x).float().mean()) - want) < 0.005, x
    single = torch.sigmoid(torch.randn(N, generator=torch.Generator().manual_seed(1)) - 0.4)
    assert abs(float(single.median()) - 0.401) < 0.005  # the spec's "median ≈ 0.40" is one draw's


def test_timesteps_are_reproducible_from_the_generator():
    a = sample_timesteps(8, torch.Generator().manual_seed(5))
    b = sample_timesteps(8, torch.Generator().manual_seed(5))
    c = sample_timesteps(8, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_the_turbo_schedule_is_an_explicit_option_drawing_its_eight_values_evenly():
    assert ObjectiveConfig().timesteps == "logit_normal"
    t = sample_timesteps(80_000, torch.Generator().manual_seed(0), mode="turbo_schedule")
    values, counts = torch.unique(t, return_counts=True)
    assert sorted(values.tolist(), reverse=True) == pytest.approx(list(TURBO_SHIFT3_TIMESTEPS))
    assert (counts.float() / 80_000 - 1 / 8).abs().max() < 0.005
    with pytest.raises(UserError, match="timesteps=uniform is unknown"):
        ObjectiveConfig(timesteps="uniform")


def test_cfg_dropout_replaces_about_fifteen_percent_of_samples_with_the_null_embedding():
    null = torch.randn(1, 1, 4)
    states = torch.randn(N, 3, 4)
    mask = torch.tensor([1.0, 1.0, 0.0]).expand(N, 3)
    out, out_mask, dropped = cfg_dropout(states, mask, null, 0.15, torch.Generator().manual_seed(0))
    assert abs(float(dropped.float().mean()) - 0.15) < 0.005
    assert torch.equal(out[dropped], null.expand(int(dropped.sum()), 3, 4))
    assert torch.equal(out[~dropped], states[~dropped])
    assert bool((out_mask[dropped] == 1).all()) and torch.equal(out_mask[~dropped], mask[~dropped])
    again = cfg_dropout(states, mask, null, 0.15, torch.Generator().manual_seed(0))[2]
    assert torch.equal(again, dropped)


def test_masked_loss_of_a_padded_batch_equals_the_loss_of_its_unpadded_items():
    model = tiny_model()
    enc, enc_mask = conditions(model, [(9, 5), (6, 3)])
    x0, ctx = latents(2, 20, seed=4)
    noise = torch.randn(2, 20, 64, generator=torch.Generator().manual_seed(9))
    t = torch.tensor([0.8, 0.3])
    attn = torch.ones(2, 20)
    attn[1, 12:] = 0
    cfg = ObjectiveConfig(cfg_dropout=0.0)
    with torch.no_grad():
        batched = flow_matching_loss(model, x0, enc, ctx, attn, enc_mask, config=cfg, t=t, noise=noise)["loss"]
        sse, count = 0.0, 0
        for i, n in enumerate((20, 12)):
            s = int(enc_mask[i].sum())
            alone = flow_matching_loss(model, x0[i:i + 1, :n], enc[i:i + 1, :s], ctx[i:i + 1, :n], config=cfg,
                                       t=t[i:i + 1], noise=noise[i:i + 1, :n])["loss"]
            sse, count = sse + float(alone) * n * 64, count + n * 64
    assert float(batched) == pytest.approx(sse / count, rel=1e-5)


def test_at_batch_one_the_loss_is_the_released_forward_mse():
    model = tiny_model()
    enc, enc_mask = conditions(model, [(9, 5)])
    x0, ctx = latents(1, 16)
    noise = torch.randn(1, 16, 64, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([0.45])
    with torch.no_grad():
        out = flow_matching_loss(model, x0, enc, ctx, torch.ones(1, 16), enc_mask,
                                 config=ObjectiveConfig(cfg_dropout=0.0), t=t, noise=noise)
        xt = 0.45 * noise + 0.55 * x0
        v = model.decoder(xt, t, t, enc, ctx)  # masks None, as the released forward passes them
    assert torch.equal(out["loss"], F.mse_loss(v, noise - x0))
    assert masked_mse(v, noise - x0, None) == F.mse_loss(v, noise - x0)


def test_the_loss_falls_when_training_the_tiny_decoder_on_one_song():
    model = tiny_model().train()
    enc, enc_mask = conditions(model, [(9, 5)])
    enc, enc_mask = enc.detach(), enc_mask.detach()
    x0, ctx = latents(1, 24, seed=7)
    opt = torch.optim.AdamW(model.decoder.parameters(), lr=5e-3)
    fixed = dict(t=torch.tensor([0.5]), noise=torch.randn(1, 24, 64, generator=torch.Generator().manual_seed(1)))
    cfg = ObjectiveConfig()
    with torch.no_grad():
        before = float(flow_matching_loss(model, x0, enc, ctx, None, enc_mask, config=cfg, **fixed)["loss"])
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        loss = flow_matching_loss(model, x0, enc, ctx, None, enc_mask, config=cfg, generator=g)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(flow_matching_loss(model, x0, enc, ctx, None, enc_mask, config=cfg, **fixed)["loss"])
    assert after < 0.6 * before


def test_a_step_is_reproducible_and_a_dropped_sample_trains_on_the_null_embedding():
    model = tiny_model()
    enc, enc_mask = conditions(model, [(9, 5), (6, 3)])
    x0, ctx = latents(2, 14)
    with torch.no_grad():
        a = flow_matching_loss(model, x0, enc, ctx, None, enc_mask, generator=torch.Generator().manual_seed(3))
        b = flow_matching_loss(model, x0, enc, ctx, None, enc_mask, generator=torch.Generator().manual_seed(3))
        assert set(a) == {"loss", "t_mean", "cfg_dropped"} and all(v.dim() == 0 for v in a.values())
        assert all(torch.equal(a[k], b[k]) for k in a)
        fixed = dict(t=torch.tensor([0.6, 0.2]), noise=torch.randn(2, 14, 64))
        dropped = flow_matching_loss(model, x0, enc, ctx, None, enc_mask, config=ObjectiveConfig(cfg_dropout=1.0),
                                     **fixed)
        null = flow_matching_loss(model, x0, model.null_states(enc), ctx, None, torch.ones_like(enc_mask),
                                  config=ObjectiveConfig(cfg_dropout=0.0), **fixed)
        kept = flow_matching_loss(model, x0, enc, ctx, None, enc_mask, config=ObjectiveConfig(cfg_dropout=0.0),
                                  **fixed)
    assert float(dropped["cfg_dropped"]) == 1.0 and torch.equal(dropped["loss"], null["loss"])
    assert not torch.equal(dropped["loss"], kept["loss"])
