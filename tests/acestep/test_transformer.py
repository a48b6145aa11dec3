"""ACE-Step transformer: key layout vs. the released model, numerics of RoPE / attention / REPA,
masking, and a short training run on the tiny preset."""
from __future__ import annotations

import math
import re

import torch

from audiotrain_acestep.attention import Attention
from audiotrain_acestep.lyric_encoder import RelPositionalEncoding, RelPositionMultiHeadedAttention
from audiotrain_acestep.presets import PRESETS, get_preset
from audiotrain_acestep.rope import RotaryEmbedding, apply_rotary_emb
from audiotrain_acestep.transformer import ACEStepTransformer2DModel
from tests.ref_keys import ref_keys

UNUSED = ("add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")


def _generic(key: str) -> str:
    return re.sub(r"\.\d+(?=\.|$)", ".#", key)


def _tiny(seed: int = 0) -> ACEStepTransformer2DModel:
    torch.manual_seed(seed)
    return ACEStepTransformer2DModel(get_preset("tiny"))


def _batch(seed: int = 1) -> dict:
    """B=2, T=7 frames, 5 text tokens (sample 0 padded after 3), 9 lyric tokens (sample 1 padded after 6)."""
    g = torch.Generator().manual_seed(seed)
    b, t = 2, 7
    attention_mask = torch.ones(b, t)
    text_mask = torch.ones(b, 5)
    text_mask[0, 3:] = 0
    lyric_mask = torch.ones(b, 9)
    lyric_mask[1, 6:] = 0
    return dict(
        hidden_states=torch.randn(b, 8, 16, t, generator=g),
        attention_mask=attention_mask,
        encoder_text_hidden_states=torch.randn(b, 5, 32, generator=g),
        text_attention_mask=text_mask,
        speaker_embeds=torch.randn(b, 16, generator=g),
        lyric_token_idx=torch.randint(0, 6693, (b, 9), generator=g),
        lyric_mask=lyric_mask,
        timestep=torch.tensor([500.0, 10.0]),
    )


def test_v1_preset_matches_reference_keys_and_shapes():
    ref = ref_keys("acestep_transformer")
    cfg = {k: v for k, v in ref["config"].items() if not k.startswith("_")}
    assert PRESETS["v1-3.5b"] == cfg
    with torch.device("meta"):
        model = ACEStepTransformer2DModel(get_preset("v1-3.5b"))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(ours) - set(ref["keys"])) == []  # unexpected
    assert sorted(set(ref["keys"]) - set(ours)) == []  # missing
    assert {k: v for k, v in ours.items() if v != ref["keys"][k]} == {}
    assert len(ours) == ref["num_keys"] == 874
    assert sum(p.numel() for p in model.parameters()) == ref["num_params"] == 3_305_659_264


def test_tiny_preset_uses_the_reference_names():
    ref_generic = {_generic(k) for k in ref_keys("acestep_transformer")["keys"]}
    tiny_keys = _tiny().state_dict().keys()
    assert len(tiny_keys) > 50
    assert sorted(k for k in tiny_keys if _generic(k) not in ref_generic) == []
    # ... and covers every kind of reference key
    assert {_generic(k) for k in tiny_keys} == ref_generic


def test_tiny_forward_shapes_and_padding_invariance():
    model = _tiny().eval()
    batch = _batch()
    with torch.no_grad():
        out = model(**batch)
        assert out.sample.shape == (2, 8, 16, 7)
        assert torch.isfinite(out.sample).all()
        assert out.proj_losses == []

        # a padded text token and a padded lyric token must not matter
        perturbed = dict(batch)
        perturbed["encoder_text_hidden_states"] = batch["encoder_text_hidden_states"].clone()
        perturbed["encoder_text_hidden_states"][0, 4] += 5.0
        perturbed["lyric_token_idx"] = batch["lyric_token_idx"].clone()
        perturbed["lyric_token_idx"][1, 7] = (batch["lyric_token_idx"][1, 7] + 17) % 6693
        again = model(**perturbed)
        torch.testing.assert_close(again.sample, out.sample, rtol=0, atol=1e-6)

        # while a valid lyric token does change the output
        valid = dict(batch)
        valid["lyric_token_idx"] = batch["lyric_token_idx"].clone()
        valid["lyric_token_idx"][1, 2] = (batch["lyric_token_idx"][1, 2] + 17) % 6693
        assert (model(**valid).sample - out.sample).abs().max() > 1e-4

        # an all-masked lyric sequence (condition dropout) stays finite
        dropped = dict(batch, lyric_mask=torch.zeros(2, 9))
        assert torch.isfinite(model(**dropped).sample).all()

        # output_length pads with zeros / crops
        enc, enc_mask = model.encode(
            batch["encoder_text_hidden_states"], batch["text_attention_mask"], batch["speaker_embeds"],
            batch["lyric_token_idx"], batch["lyric_mask"],
        )
        assert enc.shape == (2, 1 + 5 + 9, 32) and enc_mask.shape == (2, 15)
        longer, _ = model.decode(batch["hidden_states"], batch["attention_mask"], enc, enc_mask, batch["timestep"], output_length=9)
        assert longer.shape == (2, 8, 16, 9)
        torch.testing.assert_close(longer[..., :7], out.sample)
        assert longer[..., 7:].abs().max() == 0


def test_rope_half_cache_interleaved_rotation():
    dim, theta, t = 8, 1_000_000.0, 5
    rope = RotaryEmbedding(dim, max_position_embeddings=16, base=theta)
    assert rope.state_dict() == {}  # non-persistent caches
    x = torch.randn(1, 2, t, dim, dtype=torch.float64)
    cos, sin = rope(x, seq_len=t)
    assert cos.shape == (t, dim) and cos.dtype == torch.float64
    got = apply_rotary_emb(x, (cos, sin))

    want = torch.empty_like(x)
    half = dim // 2
    for p in range(t):
        # the cache column c holds the angle p * theta^(-2 (c mod D/2) / D)
        ang = [p * theta ** (-2.0 * (c % half) / dim) for c in range(dim)]
        for i in range(half):
            a, b = x[..., p, 2 * i], x[..., p, 2 * i + 1]
            want[..., p, 2 * i] = a * math.cos(ang[2 * i]) - b * math.sin(ang[2 * i])
            want[..., p, 2 * i + 1] = b * math.cos(ang[2 * i + 1]) + a * math.sin(ang[2 * i + 1])
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    # position 0 is the identity; beyond the cache the table is extended
    torch.testing.assert_close(got[..., 0, :], x[..., 0, :])
    cos_long, _ = rope(x, seq_len=40)
    assert cos_long.shape == (40, dim)


def test_linear_self_attention_matches_naive_loop():
    torch.manual_seed(0)
    heads, d, t = 2, 8, 6
    attn = Attention(heads * d, heads, d, cross_attention=False)
    x = torch.randn(2, t, heads * d)
    mask = torch.ones(2, t)
    mask[1, 4:] = 0
    freqs = RotaryEmbedding(d, max_position_embeddings=32)(x, seq_len=t)
    with torch.no_grad():
        got = attn(x, attention_mask=mask, rotary_freqs_cis=freqs)

        def split(y):
            return y.view(2, t, heads, d).transpose(1, 2)

        q = torch.relu(apply_rotary_emb(split(attn.to_q(x)), freqs))
        k = torch.relu(apply_rotary_emb(split(attn.to_k(x)), freqs))
        v = split(attn.to_v(x))
        out = torch.zeros(2, heads, t, d)
        for b in range(2):
            for h in range(heads):
                for s in range(t):
                    if mask[b, s] == 0:
                        continue  # zeroed query → zero output
                    num = torch.zeros(d)
                    den = 0.0
                    for j in range(t):
                        if mask[b, j] == 0:
                            continue
                        w = torch.dot(k[b, h, j], q[b, h, s])
                        num += v[b, h, j] * w
                        den += w
                    out[b, h, s] = num / (den + 1e-15)
        want = attn.to_out[0](out.transpose(1, 2).reshape(2, t, heads * d))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1, 4:], attn.to_out[0].bias.detach().expand(2, -1))


def test_cross_attention_matches_naive_softmax_and_guards_empty_rows():
    torch.manual_seed(0)
    heads, d, t, l_enc = 2, 8, 5, 4
    attn = Attention(heads * d, heads, d, cross_attention=True)
    x, enc = torch.randn(2, t, heads * d), torch.randn(2, l_enc, heads * d)
    lat_mask, enc_mask = torch.ones(2, t), torch.ones(2, l_enc)
    lat_mask[0, 3:] = 0
    enc_mask[1, 2:] = 0
    rope = RotaryEmbedding(d, max_position_embeddings=32)
    fq, fk = rope(x, seq_len=t), rope(enc, seq_len=l_enc)
    with torch.no_grad():
        got = attn(x, encoder_hidden_states=enc, attention_mask=lat_mask, encoder_attention_mask=enc_mask,
                   rotary_freqs_cis=fq, rotary_freqs_cis_cross=fk)
        q = apply_rotary_emb(attn.to_q(x).view(2, t, heads, d).transpose(1, 2), fq)
        k = apply_rotary_emb(attn.to_k(enc).view(2, l_enc, heads, d).transpose(1, 2), fk)
        v = attn.to_v(enc).view(2, l_enc, heads, d).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d)
        allowed = (lat_mask[:, :, None] * enc_mask[:, None, :]).bool()[:, None]
        probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1).nan_to_num(0.0)
        want = attn.to_out[0]((probs @ v).transpose(1, 2).reshape(2, t, heads * d))
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[0, 3:], attn.to_out[0].bias.detach().expand(2, -1))


def test_lyric_rel_pos_attention_matches_naive_loop():
    torch.manual_seed(0)
    heads, d_model, t = 2, 8, 5
    d_k = d_model // heads
    attn = RelPositionMultiHeadedAttention(heads, d_model, 0.0).eval()
    pos_enc = RelPositionalEncoding(d_model, 0.0, max_len=16).eval()
    x = torch.randn(2, t, d_model)
    mask = torch.ones(2, 1, t, dtype=torch.bool)
    mask[1, 0, 3:] = False
    with torch.no_grad():
        scaled, pos_emb = pos_enc(x)
        torch.testing.assert_close(scaled, x * math.sqrt(d_model))
        assert pos_emb.shape == (1, 2 * t - 1, d_model)
        got = attn(x, mask, pos_emb)

        def sinusoid(rel: int) -> torch.Tensor:
            out = torch.empty(d_model)
            for m in range(d_model // 2):
                ang = rel * 10000.0 ** (-2.0 * m / d_model)
                out[2 * m], out[2 * m + 1] = math.sin(ang), math.cos(ang)
            return out

        q = attn.linear_q(x).view(2, t, heads, d_k)
        k = attn.linear_k(x).view(2, t, heads, d_k)
        v = attn.linear_v(x).view(2, t, heads, d_k)
        want = torch.zeros(2, t, heads, d_k)
        for b in range(2):
            for h in range(heads):
                for i in range(t):
                    scores = []
                    for j in range(t):
                        p = attn.linear_pos(sinusoid(i - j)).view(heads, d_k)[h]
                        s = torch.dot(q[b, i, h] + attn.pos_bias_u[h], k[b, j, h])
                        s = s + torch.dot(q[b, i, h] + attn.pos_bias_v[h], p)
                        scores.append(s / math.sqrt(d_k) if mask[b, 0, j] else torch.tensor(float("-inf")))
                    w = torch.softmax(torch.stack(scores), dim=0)
                    want[b, i, h] = (w[:, None] * v[b, :, h]).sum(0)
        want = attn.linear_out(want.reshape(2, t, d_model))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_repa_loss_values_and_only_with_teachers():
    model = _tiny().eval()
    batch = _batch()
    captured = {}
    hooks = [p.register_forward_hook(lambda m, i, o, k=k: captured.__setitem__(k, o.detach())) for k, p in enumerate(model.projectors)]
    with torch.no_grad():
        probe = model(**batch, ssl_hidden_states=[torch.randn(2, 7, 16), torch.randn(2, 7, 12)])
    for h in hooks:
        h.remove()
    assert [name for name, _ in probe.proj_losses] == ["mert", "m-hubert"]
    # teachers equal to (a positive multiple of) the projections, same length → loss 0
    with torch.no_grad():
        out = model(**batch, ssl_hidden_states=[captured[0], 3.0 * captured[1]])
    for _, loss in out.proj_losses:
        assert loss.ndim == 0 and abs(loss.item()) < 1e-6

    # explicit formula with time resampling 7 → 11 (linear, align_corners=False)
    g = torch.Generator().manual_seed(3)
    proj, teacher = torch.randn(2, 7, 4, generator=g), torch.randn(2, 11, 4, generator=g)
    expected = 0.0
    for b in range(2):
        per_frame = []
        for i in range(11):
            src = max((i + 0.5) * 7 / 11 - 0.5, 0.0)
            lo = min(int(math.floor(src)), 6)
            hi = min(lo + 1, 6)
            frac = src - lo
            z_tilde = proj[b, lo] * (1 - frac) + proj[b, hi] * frac
            per_frame.append(1.0 - torch.nn.functional.cosine_similarity(z_tilde, teacher[b, i], dim=0).item())
        expected += sum(per_frame) / 11
    expected /= 2
    got = ACEStepTransformer2DModel.repa_loss(proj, teacher)
    assert abs(got.item() - expected) < 1e-5
    # per-sample teacher lists of different lengths are accepted
    ragged = ACEStepTransformer2DModel.repa_loss(proj, [teacher[0], teacher[1, :9]])
    assert torch.isfinite(ragged)


def test_tiny_training_reduces_loss_and_reaches_every_parameter():
    model = _tiny().train()
    batch = _batch()
    g = torch.Generator().manual_seed(7)
    target = torch.randn(2, 8, 16, 7, generator=g)
    teachers = [torch.randn(2, 11, 16, generator=g), torch.randn(2, 5, 12, generator=g)]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(30):
        out = model(**batch, ssl_hidden_states=teachers)
        mse = (out.sample - target).pow(2).mean()
        loss = mse + sum(l for _, l in out.proj_losses) / len(out.proj_losses)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            no_grad = sorted(
                n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0
            )
            assert no_grad and all(any(u in n for u in UNUSED) for n in no_grad), no_grad
            assert len(no_grad) == 8 * len(model.transformer_blocks)
        opt.step()
        losses.append(mse.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_gradient_checkpointing_gives_identical_gradients():
    batch = _batch()
    grads = []
    for ckpt in (False, True):
        model = _tiny(seed=5).train()
        if ckpt:
            model.enable_gradient_checkpointing()
        assert model.gradient_checkpointing is ckpt
        torch.manual_seed(11)  # same dropout masks in both runs
        out = model(**batch, ssl_hidden_states=[torch.ones(2, 7, 16), torch.ones(2, 3, 12)])
        (out.sample.square().mean() + sum(l for _, l in out.proj_losses)).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-6, msg=name)
