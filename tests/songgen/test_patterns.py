"""SongGen token patterns (spec §3.3, §3.4, §3.6): hand-written layouts, exact inverses, generation masks."""
from __future__ import annotations

import pytest
import torch

from audiotrain_songgen import patterns as pt
from audiotrain_songgen.patterns import BOS as B, EOS as E, PAD as P

ACC = torch.tensor([[1, 2], [3, 4], [5, 6]])
VOCAL = torch.tensor([[7, 8], [9, 10], [11, 12]])
ACC_DELAYED = torch.tensor([[1, 2, E, E, E],
                            [B, 3, 4, E, E],
                            [B, B, 5, 6, E]])


def _codes(K: int, T: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 1024, (K, T), generator=torch.Generator().manual_seed(seed))


def test_constants():
    assert (pt.EOS, pt.PAD, pt.BOS, pt.VOCAB_SIZE, pt.MASK) == (1024, 1024, 1025, 1088, 1030)
    assert pt.TRACK_SPECIAL == {"random": (1031, 1032), "melody": (1033, 1034), "drum": (1035, 1036),
                                "vocal": (1037, 1038), "acc": (1039, 1040)}


def test_delay_hand_example():
    out = pt.delay(ACC)
    assert out.dtype == torch.long
    assert torch.equal(out, ACC_DELAYED)


@pytest.mark.parametrize("K", [1, 3, 8])
@pytest.mark.parametrize("T", [1, 2, 5, 7, 16])
def test_delay_undelay_identity(K, T):
    codes = _codes(K, T, seed=K * 100 + T)
    labels = pt.delay(codes)
    assert labels.shape == (K, T + K)
    assert torch.equal(pt.undelay(labels), codes)
    for k in range(K):  # row k: BOS x k, codes, EOS x (K-k)
        assert labels[k, :k].eq(B).all() and labels[k, k + T:].eq(E).all() and labels[k, k + T:].numel() == K - k


def test_delay_batched_and_int16():
    codes = torch.stack([_codes(8, 5, 1), _codes(8, 5, 2)]).short()
    out = pt.delay(codes)
    assert out.dtype == torch.long and out.shape == (2, 8, 13)
    assert torch.equal(out[1], pt.delay(codes[1].long()))
    assert torch.equal(pt.undelay(out), codes.long())


def test_keep_start_and_remap_track():
    vb, ve = pt.TRACK_SPECIAL["vocal"]
    stored = pt.delay(ACC, bos=vb, eos=ve, keep_start=True)
    assert stored.shape == (3, 6)
    assert torch.equal(stored, torch.tensor([[vb, 1, 2, ve, ve, ve],
                                             [vb, vb, 3, 4, ve, ve],
                                             [vb, vb, vb, 5, 6, ve]]))
    assert torch.equal(pt.remap_track(stored, "vocal"), ACC_DELAYED)
    for atype, (tb, te) in pt.TRACK_SPECIAL.items():
        codes = _codes(8, 7, seed=tb)
        ref = pt.delay(codes, bos=tb, eos=te, keep_start=True)
        assert torch.equal(pt.remap_track(ref, atype), pt.delay(codes))


def test_remap_track_errors():
    ref = pt.delay(ACC, *pt.TRACK_SPECIAL["acc"], keep_start=True)
    with pytest.raises(ValueError, match="bos 1037"):
        pt.remap_track(ref, "vocal")
    with pytest.raises(ValueError, match="expected one of random, melody, drum, vocal, acc"):
        pt.remap_track(ref, "bass")


def test_bad_pattern_name():
    with pytest.raises(ValueError) as err:
        pt.streams("interleave")
    msg = str(err.value)
    assert all(name in msg for name in pt.PATTERNS) and msg.count(".") == 1 and msg.endswith(".")
    with pytest.raises(ValueError, match="interleaving_A_V"):
        pt.combine(ACC_DELAYED, ACC_DELAYED, "mixed")


def test_streams():
    assert [pt.streams(p) for p in pt.PATTERNS] == [8, 8, 8, 8, 16, 16, 16]
    assert pt.streams("parallel_A_V", K=3) == 6 and pt.streams("mixed_pro", K=4) == 4


def test_shift_right_hand_example():
    labels = torch.tensor([[[1, 2, E, -100], [B, 3, E, -100]]])
    expected = torch.tensor([[[B, 1, 2, E], [B, B, 3, E]]])
    assert torch.equal(pt.shift_right(labels), expected)
    assert torch.equal(pt.shift_right(torch.tensor([5, -100, 6]), start=9, pad=0), torch.tensor([9, 5, 0]))
    assert torch.equal(pt.shift_right(ACC_DELAYED), torch.tensor([[B, 1, 2, E, E],
                                                                   [B, B, 3, 4, E],
                                                                   [B, B, B, 5, 6]]))


def test_interleaving_hand_example():
    out = pt.combine(pt.delay(ACC), pt.delay(VOCAL), "interleaving_A_V")
    assert torch.equal(out, torch.tensor([[1, 7, 2, 8, E, E, E, E, E, E],
                                          [B, B, 3, 9, 4, 10, E, E, E, E],
                                          [B, B, B, B, 5, 11, 6, 12, E, E]]))
    for k in range(3):  # the acc token of frame 0 of row k sits at 2k, its vocal token right after
        assert out[k, 2 * k] == ACC[k, 0] and out[k, 2 * k + 1] == VOCAL[k, 0]
    v_first = pt.combine(pt.delay(ACC), pt.delay(VOCAL), "interleaving_V_A")
    assert v_first[0].tolist() == [7, 1, 8, 2, E, E, E, E, E, E]


def test_parallel_hand_examples():
    acc, vocal = pt.delay(ACC), pt.delay(VOCAL)
    std = pt.combine(acc, vocal, "parallel_std")
    assert std.shape == (6, 5) and torch.equal(std, torch.cat([acc, vocal]))
    a_v = pt.combine(acc, vocal, "parallel_A_V")
    assert torch.equal(a_v, torch.tensor([[1, 2, E, E, E, P],
                                          [B, 3, 4, E, E, P],
                                          [B, B, 5, 6, E, P],
                                          [B, 7, 8, E, E, E],
                                          [B, B, 9, 10, E, E],
                                          [B, B, B, 11, 12, E]]))
    v_a = pt.combine(acc, vocal, "parallel_V_A")
    assert v_a[0].tolist() == [B, 1, 2, E, E, E] and v_a[3].tolist() == [7, 8, E, E, E, P]


@pytest.mark.parametrize("pattern", pt.DUAL_TRACK)
@pytest.mark.parametrize("T", [1, 4, 7])
def test_combine_split_identity(pattern, T):
    K = 8
    acc, vocal = pt.delay(_codes(K, T, 1)), pt.delay(_codes(K, T, 2))
    out = pt.combine(acc, vocal, pattern)
    expected = {"interleaving_A_V": (K, 2 * (T + K)), "interleaving_V_A": (K, 2 * (T + K)),
                "parallel_std": (2 * K, T + K), "parallel_A_V": (2 * K, T + K + 1), "parallel_V_A": (2 * K, T + K + 1)}
    assert out.shape == expected[pattern]
    assert out.shape[-1] == pt.pattern_length(T, K, pattern) and out.shape[0] == pt.streams(pattern, K)
    back_acc, back_vocal = pt.split(out, pattern)
    assert torch.equal(back_acc, acc) and torch.equal(back_vocal, vocal)
    batched = pt.combine(torch.stack([acc, vocal]), torch.stack([vocal, acc]), pattern)  # leading batch dims
    assert torch.equal(batched[0], out) and torch.equal(pt.split(batched, pattern)[1][1], acc)


def test_combine_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        pt.combine(pt.delay(ACC), pt.delay(ACC[:, :1]), "parallel_std")


def test_strip_pattern():
    codes = _codes(3, 4, 5)
    seq = pt.delay(codes)
    assert torch.equal(pt.strip_pattern(seq), codes)
    with_start = torch.cat([torch.full((3, 1), B), seq], dim=1)  # the decoder-start column undelays to all BOS
    assert torch.equal(pt.strip_pattern(with_start), codes)
    bad = seq.clone()
    bad[1, 1 + 2] = pt.MASK  # frame 2 of codebook 1 is a special id: the whole frame goes
    assert torch.equal(pt.strip_pattern(bad), codes[:, [0, 1, 3]])
    cut = seq[:, :5]  # cut at max_len before the tail: frames every codebook reached
    assert torch.equal(pt.strip_pattern(cut), codes[:, :2])
    assert pt.strip_pattern(seq[:, :2]).shape == (3, 0)


def test_pattern_mask_mixed():
    mask = pt.pattern_mask(2, 3, 7, "mixed")
    F_ = pt.FREE
    expected = torch.tensor([[B, F_, F_, F_, E, E, E],
                             [B, B, F_, F_, F_, E, E],
                             [B, B, B, F_, F_, F_, E]])
    assert mask.shape == (2, 3, 7) and torch.equal(mask[0], expected) and torch.equal(mask[1], expected)
    prompt = torch.tensor([[[B, 11], [B, B], [B, B]]]).expand(2, -1, -1)
    assert torch.equal(pt.pattern_mask(2, 3, 7, "mixed", prompt=prompt)[:, 0, :2], torch.tensor([[B, 11]] * 2))
    with pytest.raises(ValueError, match="too short"):
        pt.pattern_mask(1, 3, 4, "mixed")


@pytest.mark.parametrize("pattern", pt.PATTERNS)
def test_pattern_mask_matches_training_layout(pattern):
    K, T = 4, 3
    acc, vocal = pt.delay(_codes(K, T, 1)), pt.delay(_codes(K, T, 2))
    layout = acc if pattern in pt.SINGLE_TRACK else pt.combine(acc, vocal, pattern)
    full = torch.cat([torch.full((layout.shape[0], 1), B), layout], dim=1)  # decoder start + labels
    mask = pt.pattern_mask(1, K, full.shape[1], pattern)[0]
    assert mask.shape == (pt.streams(pattern, K), 1 + pt.pattern_length(T, K, pattern))
    forced = mask != pt.FREE
    assert torch.equal(mask[forced], full[forced])  # forced tokens are the layout's specials
    assert (full[~forced] < 1024).all() and not (full[forced] < 1024).any()  # free exactly where codes are
    noise = torch.randint(0, 1024, (1, *full.shape))
    masked = pt.apply_mask(noise, mask[None])[0]
    assert torch.equal(masked[forced], full[forced]) and torch.equal(masked[~forced], noise[0][~forced])


@pytest.mark.parametrize("pattern", pt.INTERLEAVING)
def test_pattern_mask_odd_interleaving_length(pattern):
    even = pt.pattern_mask(1, 4, 1 + 2 * (3 + 4), pattern)
    odd = pt.pattern_mask(1, 4, 2 + 2 * (3 + 4), pattern)  # one position too few for a 4th frame: PAD
    assert torch.equal(odd[..., :-1], even) and odd[..., -1].eq(P).all()


def test_apply_mask_and_force_step():
    mask = pt.pattern_mask(1, 3, 7, "mixed")
    gen = torch.full((1, 3, 5), 9)
    out = pt.apply_mask(gen, mask)
    assert out[0].tolist() == [[B, 9, 9, 9, E], [B, B, 9, 9, 9], [B, B, B, 9, 9]]
    with pytest.raises(ValueError, match="covers"):
        pt.apply_mask(torch.zeros(1, 3, 8, dtype=torch.long), mask)
    ended = torch.tensor([[True, False, False]])
    step = pt.force_step(torch.tensor([[5, 6, 7]]), mask[..., 2], ended)
    assert step.tolist() == [[P, 6, B]]  # ended stream -> PAD, delay head -> BOS, free -> sampled
    seq = torch.tensor([[3, E, 4, 5], [1, 2, 3, E]])
    assert pt.pad_after_eos(seq).tolist() == [[3, E, P, P], [1, 2, 3, E]]


def test_order_eos():
    V = 1088
    logits = torch.zeros(2, 3, V)
    ended = torch.tensor([[False, False, False], [True, False, False]])
    out = pt.order_eos(logits, ended)
    assert out[0, :, E].tolist() == [0.0, float("-inf"), float("-inf")]
    assert out[1, :, E].tolist() == [0.0, 0.0, float("-inf")]  # codebook 2 waits for codebooks 0 and 1
    out = pt.order_eos(logits, torch.tensor([[True, True, False], [False, True, False]]))
    assert out[0, :, E].tolist() == [0.0, 0.0, 0.0]
    assert out[1, :, E].tolist() == [0.0, float("-inf"), float("-inf")]  # 1 ended but 0 did not
    assert torch.equal(out[..., :E], logits[..., :E]) and torch.equal(out[..., E + 1:], logits[..., E + 1:])
    assert logits[0, 1, E] == 0  # not in place
    grouped = pt.eos_allowed(torch.tensor([[True, False, False, False]]), group=2)  # parallel: one group per track
    assert grouped.tolist() == [[True, True, True, False]]
    with pytest.raises(ValueError, match="groups of 3"):
        pt.eos_allowed(torch.zeros(1, 4, dtype=torch.bool), group=3)


@pytest.mark.parametrize("pattern", pt.PATTERNS)
def test_extract_codes_roundtrip(pattern):
    K, T = 8, 6
    acc_codes, vocal_codes = _codes(K, T, 3), _codes(K, T, 4)
    acc, vocal = pt.delay(acc_codes), pt.delay(vocal_codes)
    layout = acc if pattern in pt.SINGLE_TRACK else pt.combine(acc, vocal, pattern)
    seq = torch.cat([torch.full((layout.shape[0], 1), B), layout], dim=1)
    got = pt.extract_codes(seq, pattern)
    if pattern in pt.SINGLE_TRACK:
        assert torch.equal(got, acc_codes)
    else:
        assert torch.equal(got[0], acc_codes) and torch.equal(got[1], vocal_codes)
