"""SongGen loss (spec §3.5): the codebook-weight curriculum, the masked per-stream CE and the per-pattern totals,
each against a hand computation."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from audiotrain_songgen import patterns as pt
from audiotrain_songgen.loss import align_vocal, base_weights, codebook_ce, codebook_weights, songgen_loss
from audiotrain_songgen.patterns import BOS as B, EOS as E

V = pt.VOCAB_SIZE
W0 = [0.25, 0.25, 0.25, 0.05, 0.05, 0.05, 0.05, 0.05]


def _batch(K: int, lengths: list[int], seed: int = 0):
    """Delayed labels of random codes (one sample per T in ``lengths``), padded with -100; their decoder input."""
    gen = torch.Generator().manual_seed(seed)
    rows = [pt.delay(torch.randint(0, 1024, (K, T), generator=gen)) for T in lengths]
    S = max(r.shape[-1] for r in rows)
    labels = torch.stack([align_vocal(r, S) for r in rows])
    return labels, pt.shift_right(labels)


def _logits(B_: int, N: int, S: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(B_, N, S, V, generator=torch.Generator().manual_seed(seed)) * 3


def _hand_ce(logits, labels, decoder_input):
    """Per stream: the scored (position, target) pairs picked one by one, then F.cross_entropy over them."""
    S = labels.shape[-1]
    logits = logits[:, :, -S:]
    out = []
    for k in range(labels.shape[1]):
        rows, targets = [], []
        for b in range(labels.shape[0]):
            for s in range(S):
                lab, inp = int(labels[b, k, s]), int(decoder_input[b, k, s])
                if lab not in (-100, B) and inp != E:
                    rows.append(logits[b, k, s])
                    targets.append(lab)
        out.append(F.cross_entropy(torch.stack(rows).float(), torch.tensor(targets)) if rows else torch.tensor(0.0))
    return torch.stack(out)


def test_bucketize_right_false_keeps_boundaries_low():
    edges = torch.tensor([0.3, 0.6, 0.8], dtype=torch.float64)
    p = torch.tensor([0.0, 0.3, 0.3000001, 0.6, 0.8, 0.80001, 1.0], dtype=torch.float64)
    assert torch.bucketize(p, edges, right=False).tolist() == [0, 0, 1, 1, 2, 3, 3]


@pytest.mark.parametrize("step,total,alpha", [
    (0, 1000, 0.0), (300, 1000, 0.0), (3, 10, 0.0), (301, 1000, 0.3), (500, 1000, 0.3), (600, 1000, 0.3),
    (601, 1000, 0.6), (800, 1000, 0.6), (8, 10, 0.6), (801, 1000, 0.8), (1000, 1000, 0.8), (1200, 1000, 0.8)])
def test_codebook_weights_curriculum(step, total, alpha):
    w = codebook_weights(step, total)
    expected = torch.tensor([(1 - alpha) * w0 + alpha / 8 for w0 in W0])
    assert w.dtype == torch.float32 and w.shape == (8,)
    assert torch.allclose(w, expected, atol=1e-7)
    assert abs(float(w.sum()) - 1.0) < 1e-6


def test_codebook_weights_hand_values():
    assert torch.allclose(codebook_weights(500, 1000)[[0, 3]], torch.tensor([0.2125, 0.0725]))  # alpha 0.3
    assert torch.allclose(codebook_weights(700, 1000)[[0, 3]], torch.tensor([0.175, 0.095]))  # alpha 0.6
    assert torch.allclose(codebook_weights(900, 1000)[[0, 7]], torch.tensor([0.15, 0.11]))  # alpha 0.8
    assert torch.allclose(codebook_weights(0, 1), torch.tensor(W0))


def test_codebook_weights_other_K_and_errors():
    assert torch.allclose(base_weights(12), torch.tensor([0.25] * 3 + [0.25 / 9] * 9, dtype=torch.float64))
    assert torch.allclose(base_weights(4), torch.full((4,), 0.25, dtype=torch.float64))
    assert torch.allclose(codebook_weights(0, 10, K=2), torch.tensor([0.5, 0.5]))
    w = codebook_weights(900, 1000, K=5)
    assert torch.allclose(w, torch.tensor([0.2 * 0.25 + 0.16] * 3 + [0.2 * 0.125 + 0.16] * 2))
    assert abs(float(w.sum()) - 1) < 1e-6
    with pytest.raises(ValueError, match="total_steps must be positive"):
        codebook_weights(1, 0)
    with pytest.raises(ValueError, match="at least 1"):
        codebook_weights(1, 10, K=0)


def test_codebook_ce_targets_of_the_hand_example():
    labels = pt.delay(torch.tensor([[1, 2], [3, 4], [5, 6]]))[None]
    inp = pt.shift_right(labels)
    scored = (inp != E) & (labels != B) & (labels != -100)
    assert [labels[0, k][scored[0, k]].tolist() for k in range(3)] == [[1, 2, E], [3, 4, E], [5, 6, E]]
    logits = _logits(1, 3, 5)
    assert torch.allclose(codebook_ce(logits, labels, inp), _hand_ce(logits, labels, inp), atol=1e-6)


def test_codebook_ce_matches_hand_computation():
    labels, inp = _batch(4, [5, 2, 3])  # padded with -100 -> ignored
    logits = _logits(3, 4, labels.shape[-1] + 3)  # 3 extra positions at the front are cut off
    ce = codebook_ce(logits, labels, inp)
    assert ce.dtype == torch.float32 and ce.shape == (4,)
    assert torch.allclose(ce, _hand_ce(logits, labels, inp), atol=1e-6)
    scored = (inp != E) & (labels != -100) & (labels != B)
    assert ((labels == E) & scored).sum(-1).eq(1).all()  # exactly one EOS target per sample and stream
    assert scored.sum((0, 2)).tolist() == [5 + 2 + 3 + 3] * 4
    garbage = logits.clone()
    garbage[:, :, :3] = 1e4
    assert torch.equal(codebook_ce(garbage, labels, inp), ce)  # only the last S positions count
    assert not torch.allclose(codebook_ce(logits[:, :, :-3], labels, inp), ce)


def test_codebook_ce_empty_stream_is_zero_with_grad():
    labels, inp = _batch(3, [4, 2])
    labels[:, 1] = -100
    logits = _logits(2, 3, labels.shape[-1]).requires_grad_()
    ce = codebook_ce(logits, labels, inp)
    assert ce[1] == 0 and torch.isfinite(ce).all()
    assert torch.allclose(ce[[0, 2]], _hand_ce(logits.detach(), labels, inp)[[0, 2]], atol=1e-6)
    ce.sum().backward()
    assert logits.grad[:, 1].abs().sum() == 0 and logits.grad[:, 0].abs().sum() > 0


def test_codebook_ce_bf16_in_float32():
    labels, inp = _batch(3, [4, 3])
    logits = _logits(2, 3, labels.shape[-1]).bfloat16()
    ce = codebook_ce(logits, labels, inp)
    assert ce.dtype == torch.float32
    assert torch.allclose(ce, _hand_ce(logits.float(), labels, inp), atol=1e-5)


def test_codebook_ce_shape_errors():
    labels, inp = _batch(3, [4])
    with pytest.raises(ValueError, match="do not fit"):
        codebook_ce(_logits(1, 3, labels.shape[-1] - 1), labels, inp)


def test_loss_mixed_unweighted_and_weighted():
    labels, inp = _batch(8, [6, 4])
    logits = _logits(2, 8, labels.shape[-1] + 1)
    ce = _hand_ce(logits, labels, inp)
    out = songgen_loss(logits, labels, inp, pattern="mixed")
    assert torch.allclose(out["loss"], ce.mean(), atol=1e-6)
    assert all(torch.allclose(out[f"code_loss_{k}"], ce[k], atol=1e-6) for k in range(8))
    assert all(float(out[f"loss_weight_{k}"]) == 0.125 for k in range(8))
    w = codebook_weights(500, 1000)
    out = songgen_loss(logits, labels, inp, pattern="mixed", weights=w)
    assert torch.allclose(out["loss"], sum(w[k] * ce[k] for k in range(8)), atol=1e-6)
    assert out["loss"] == out["weighted_loss"] and float(out["loss_weight_0"]) == pytest.approx(0.2125)
    assert "vocal_loss" not in out and "acc_head_weighted_loss" not in out


def test_loss_mixed_pro_vocal_term():
    labels, inp = _batch(8, [6, 4], seed=2)
    vocal, _ = _batch(8, [6, 4], seed=3)
    vocal = align_vocal(vocal[..., :-2], labels.shape[-1])  # trimmed stems padded back with -100
    logits, vocal_logits = _logits(2, 8, labels.shape[-1], 4), _logits(2, 8, labels.shape[-1], 5)
    w = codebook_weights(900, 1000)
    out = songgen_loss(logits, labels, inp, pattern="mixed_pro", weights=w, vocal_logits=vocal_logits,
                       vocal_labels=vocal)
    ce, vce = _hand_ce(logits, labels, inp), _hand_ce(vocal_logits, vocal, inp)
    assert torch.allclose(out["loss"], (w * ce).sum() + 0.1 * (w * vce).sum(), atol=1e-6)
    assert torch.allclose(out["vocal_loss"], vce.mean(), atol=1e-6)
    assert torch.allclose(out["vocal_weighted_loss"], (w * vce).sum(), atol=1e-6)
    assert all(torch.allclose(out[f"vocal_code_loss_{k}"], vce[k], atol=1e-6) for k in range(8))
    half = songgen_loss(logits, labels, inp, pattern="mixed_pro", weights=w, vocal_logits=vocal_logits,
                        vocal_labels=vocal, vocal_weight=0.5)
    assert torch.allclose(half["loss"], (w * ce).sum() + 0.5 * (w * vce).sum(), atol=1e-6)
    plain = songgen_loss(logits, labels, inp, pattern="mixed_pro")  # add_vocal_loss off
    assert torch.allclose(plain["loss"], ce.mean(), atol=1e-6) and "vocal_loss" not in plain


@pytest.mark.parametrize("pattern", pt.PARALLEL)
def test_loss_parallel_half_and_half(pattern):
    K = 4
    acc, _ = _batch(K, [5, 3], seed=6)
    vocal, _ = _batch(K, [5, 3], seed=7)
    labels = pt.combine(acc, vocal, pattern)
    inp = pt.shift_right(labels)
    logits = _logits(2, 2 * K, labels.shape[-1], 8)
    w = torch.tensor([0.4, 0.3, 0.2, 0.1])
    out = songgen_loss(logits, labels, inp, pattern=pattern, weights=w)
    ce = _hand_ce(logits, labels, inp)
    acc_part = sum(w[k] * ce[k] for k in range(K))
    vocal_part = sum(w[k % K] * ce[k] for k in range(K, 2 * K))
    assert torch.allclose(out["acc_head_weighted_loss"], acc_part, atol=1e-6)
    assert torch.allclose(out["vocal_head_weighted_loss"], vocal_part, atol=1e-6)
    assert torch.allclose(out["loss"], 0.5 * acc_part + 0.5 * vocal_part, atol=1e-6)
    assert sorted(k for k in out if k.startswith("code_loss_")) == sorted(f"code_loss_{k}" for k in range(8))
    unweighted = songgen_loss(logits, labels, inp, pattern=pattern)
    assert torch.allclose(unweighted["loss"], ce.mean(), atol=1e-6)


def test_loss_interleaving_shared_heads():
    acc, _ = _batch(8, [4, 6], seed=9)
    vocal, _ = _batch(8, [4, 6], seed=10)
    labels = pt.combine(acc, vocal, "interleaving_A_V")
    inp = pt.shift_right(labels)
    logits = _logits(2, 8, labels.shape[-1], 11)
    w = codebook_weights(100, 1000)
    out = songgen_loss(logits, labels, inp, pattern="interleaving_A_V", weights=w)
    ce = _hand_ce(logits, labels, inp)
    assert torch.allclose(out["loss"], (w * ce).sum(), atol=1e-6)
    scored = (inp != E) & (labels != -100) & (labels != B)
    # one EOS target per row and sample: the acc track's; the vocal EOS right after it has an EOS input
    assert ((labels == E) & scored).sum(-1).eq(1).all()


def test_loss_errors():
    labels, inp = _batch(8, [3])
    logits = _logits(1, 8, labels.shape[-1])
    with pytest.raises(ValueError, match="mixed_pro"):
        songgen_loss(logits, labels, inp, pattern="mixed", vocal_logits=logits, vocal_labels=labels)
    with pytest.raises(ValueError, match="both or neither"):
        songgen_loss(logits, labels, inp, pattern="mixed_pro", vocal_logits=logits)
    with pytest.raises(ValueError, match=r"shape \(8,\)"):
        songgen_loss(logits, labels, inp, pattern="mixed", weights=torch.ones(4) / 4)
    with pytest.raises(ValueError, match="expected one of"):
        songgen_loss(logits, labels, inp, pattern="mix")


def test_align_vocal():
    x = torch.arange(12).reshape(1, 2, 6)
    assert torch.equal(align_vocal(x, 4), x[..., :4])
    assert align_vocal(x, 8)[0].tolist() == [[0, 1, 2, 3, 4, 5, -100, -100], [6, 7, 8, 9, 10, 11, -100, -100]]
    assert torch.equal(align_vocal(x, 6), x)
