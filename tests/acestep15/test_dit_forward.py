"""The tiny ACE-Step 1.5 DiT: output shapes, padding masks (a padded batch gives each item what it gives alone;
no padding = the unmasked computation), the condition packing, and gradient checkpointing."""
from __future__ import annotations

import torch

from audiotrain_acestep15.condition_encoder import pack_sequences
from audiotrain_acestep15.dit_attention import self_attention_mask
from tests.acestep15.dit_inputs import conditions, latents, tiny_model


def test_shapes_of_every_part():
    model = tiny_model()
    enc, mask = conditions(model, [(9, 5), (7, 6)])
    assert enc.shape == (2, 9 + 1 + 6, 64) and mask.shape == (2, 16)
    assert mask.sum(1).tolist() == [15, 14]
    for t in (24, 23):  # even and odd (zero-padded to even inside, cropped back)
        x, ctx = latents(2, t)
        v = model.velocity(x, torch.tensor([0.3, 0.9]), enc, ctx, None, mask)
        assert v.shape == (2, t, 64) and torch.isfinite(v).all()
    quantized, indices = model.tokenizer(x)
    assert quantized.shape == (2, 5, 64) and indices.shape == (2, 5, 1)  # 23 frames -> 5 groups of 5
    assert 0 <= int(indices.min()) and int(indices.max()) < 64_000
    assert model.lm_hints(indices[..., 0]).shape == (2, 25, 64)


def test_a_padded_batch_equals_each_item_alone():
    model = tiny_model()
    lengths, frames = [(9, 5), (6, 3)], [23, 14]
    enc, enc_mask = conditions(model, lengths)
    x, ctx = latents(2, 23)
    t = torch.tensor([0.7, 0.25])
    attn = torch.zeros(2, 23)
    for i, n in enumerate(frames):
        attn[i, :n] = 1
    x[1, 14:] = 100.0  # garbage in the padding must not reach the valid frames
    with torch.no_grad():
        batched = model.velocity(x, t, enc, ctx, attn, enc_mask)
        unmasked = model.velocity(x, t, enc, ctx, None, None)
        for i, n in enumerate(frames):
            s = int(enc_mask[i].sum())
            alone = model.velocity(x[i:i + 1, :n], t[i:i + 1], enc[i:i + 1, :s], ctx[i:i + 1, :n])
            torch.testing.assert_close(batched[i:i + 1, :n], alone, rtol=1e-5, atol=1e-5)
    assert batched[1, 14:].abs().max() == 0  # no velocity on padded frames
    assert (unmasked[1, :14] - batched[1, :14]).abs().max() > 1e-2  # without masks, the padding leaks in


def test_no_padding_masks_are_the_unmasked_computation_bit_exactly():
    model = tiny_model()
    enc, enc_mask = conditions(model, [(9, 5)])
    x, ctx = latents(1, 22)
    t = torch.tensor([0.5])
    with torch.no_grad():
        masked = model.velocity(x, t, enc, ctx, torch.ones(1, 22), torch.ones(1, enc.shape[1]))
        plain = model.velocity(x, t, enc, ctx)
    assert torch.equal(masked, plain)


def test_sliding_window_is_bidirectional_and_padding_rows_stay_finite():
    m = self_attention_mask(None, 10, 2, torch.device("cpu"))[0, 0]
    assert m[5].nonzero().flatten().tolist() == [3, 4, 5, 6, 7]
    assert self_attention_mask(None, 3, 2, torch.device("cpu")) is None  # the window covers everything
    valid = torch.tensor([[1] * 4 + [0] * 6])
    m = self_attention_mask(valid, 10, 2, torch.device("cpu"))[0, 0]
    assert m[2].nonzero().flatten().tolist() == [0, 1, 2, 3]
    assert m[9].nonzero().flatten().tolist() == [9]  # a padded query far from any valid key sees itself only


def test_packing_moves_valid_tokens_first_in_order():
    a = torch.arange(4.0).view(1, 4, 1)
    b = torch.arange(10.0, 13.0).view(1, 3, 1)
    states, mask = pack_sequences(a, torch.tensor([[1, 1, 0, 0]]), b, torch.tensor([[1, 0, 1]]))
    assert states.flatten().tolist() == [0, 1, 10, 12, 2, 3, 11]
    assert mask.flatten().tolist() == [1, 1, 1, 1, 0, 0, 0]


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for on in (False, True):
        model = tiny_model().train()
        model.set_gradient_checkpointing(on)
        enc, mask = conditions(model, [(9, 5), (4, 2)])
        x, ctx = latents(2, 16)
        model.velocity(x, torch.tensor([0.2, 0.6]), enc, ctx, None, mask).pow(2).mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.decoder.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])


def test_xl_shaped_tiny_runs_with_a_narrower_encoder_and_the_timbre_cls():
    model = tiny_model(encoder_hidden_size=48, encoder_intermediate_size=96, encoder_num_attention_heads=4,
                       encoder_num_key_value_heads=2)
    assert model.config.timbre_prepend_cls and model.decoder.condition_embedder.weight.shape == (64, 48)
    enc, mask = conditions(model, [(5, 4)])
    assert enc.shape == (1, 10, 48)
    x, ctx = latents(1, 12)
    assert model.velocity(x, torch.tensor([0.4]), enc, ctx, None, mask).shape == (1, 12, 64)


def test_condition_encoder_masks_padding_and_groups_references_by_item():
    model = tiny_model()
    cfg = model.config
    g = torch.Generator().manual_seed(4)
    lyric, text = torch.randn(2, 9, cfg.text_hidden_dim, generator=g), torch.randn(2, 5, cfg.text_hidden_dim, generator=g)
    lm, tm = torch.ones(2, 9), torch.ones(2, 5)
    lm[1, 4:] = 0
    tm[1, 2:] = 0
    lyric[1, 4:] = 50.0  # padding content must not matter
    refer = torch.randn(3, 6, 64, generator=g)
    with torch.no_grad():
        enc, mask = model.encode_conditions(text, tm, lyric, lm, refer, torch.tensor([0, 1, 1]))
        assert mask.sum(1).tolist() == [9 + 1 + 5, 4 + 2 + 2]
        alone, alone_mask = model.encode_conditions(text[1:, :2], tm[1:, :2], lyric[1:, :4], lm[1:, :4], refer[1:],
                                                    torch.tensor([0, 0]))
    assert alone.shape == (1, 8, 64) and bool(alone_mask.all())
    torch.testing.assert_close(enc[1:, :8], alone, rtol=1e-5, atol=1e-5)
