"""SongGen token patterns: the codebook delay, the dual-track layouts and generation masks (spec §3.3, §3.4, §3.6).

Every tensor is ``torch.long``. ``K`` is the number of codebooks (8 in the released model; any K >= 1 works) and
``T`` the number of codec frames. Vocabulary: codes 0..1023, ``EOS = PAD = 1024``, ``BOS = 1025`` (the decoder
start), 1088 ids in all. Functions take ``[..., K, S]`` (any leading batch dims) unless they say otherwise.

Worked example, K=3, T=2, acc codes ``[[1, 2], [3, 4], [5, 6]]`` (B = 1025, E = 1024)::

    delay(acc)          keep_start=True          shift_right(delay(acc))
    1 2 E E E           B 1 2 E E E              B 1 2 E E
    B 3 4 E E           B B 3 4 E E              B B 3 4 E
    B B 5 6 E           B B B 5 6 E              B B B 5 6

``delay`` gives the training labels ``[K, T+K]`` (row k = BOS x k, the codes, EOS x (K-k)); ``keep_start`` also
keeps the leading all-BOS column (how ``ref_audio_ids_{atype}`` is stored, with the type's bos/eos). The decoder
input is ``shift_right(labels)``; the loss ignores BOS labels and every position whose input is EOS, so each row has
exactly one EOS target. With vocal codes ``[[7, 8], [9, 10], [11, 12]]`` the dual-track layouts are::

    interleaving_A_V  [K, 2(T+K)] = [3, 10]: a0 v0 a1 v1 ... per row (vocal first for interleaving_V_A)
        1 7 2 8 E E E E E E
        B B 3 9 4 10 E E E E                 (the delay offset of row k is 2k positions)
        B B B B 5 11 6 12 E E
    parallel_std      [2K, T+K] = [6, 5]: acc rows 0..K-1, vocal rows K..2K-1 (delay(acc) over delay(vocal))
    parallel_A_V      [2K, T+K+1] = [6, 6]: acc = delay(acc) + one PAD column appended,
        1 2 E E E E                          vocal = one BOS column prepended + delay(vocal), so the vocal
        B 3 4 E E E                          token of frame t comes one step after the acc token of frame t
        B B 5 6 E E
        B 7 8 E E E
        B B 9 10 E E
        B B B 11 12 E
    parallel_V_A      [2K, T+K+1]: the same with the roles swapped (acc shifted, PAD appended to vocal)

Lengths: mixed / mixed_pro / parallel_std ``T+K``; parallel_A_V / parallel_V_A ``T+K+1`` (both tracks padded to it);
interleaving ``2(T+K)``. The appended PAD needs no special care in the loss: its decoder input is EOS.

Generation (a sampling loop over ``seq [B, N, L]`` that starts with the all-BOS decoder-start column)::

    mask = pattern_mask(B, K, max_len, pattern)          # -1 = free, else the forced token
    seq, ended = mask[..., :1].clone(), zeros(B, N, bool)
    for t in range(1, max_len):
        logits = order_eos(model(seq)[:, :, -1], ended, group=K)   # [B, N, V]
        tok = force_step(sample(logits), mask[..., t], ended)     # BOS of the delay, PAD after EOS, tail EOS
        ended |= tok == EOS; seq = cat([seq, tok[..., None]], -1)
        if ended.all(): break
    codes = [extract_codes(s, pattern) for s in seq]               # [K, T'] or (acc, vocal) per sample

The mask is built from the training layout itself (``combine(delay(free), delay(free))`` behind the start
column), so it is right for every pattern, parallel ones included; its tail forces EOS so that every stream ends
by ``max_len``.
"""
from __future__ import annotations

import torch

CODEBOOK_SIZE = 1024
EOS = PAD = 1024
BOS = 1025  # = decoder_start_token_id
VOCAB_SIZE = 1088
MASK = 1030
IGNORE_INDEX = -100
FREE = -1  # pattern_mask: the model chooses this token
#: type-specific (bos, eos) of the stored ``ref_audio_ids_{atype}`` columns
TRACK_SPECIAL = {"random": (1031, 1032), "melody": (1033, 1034), "drum": (1035, 1036),
                 "vocal": (1037, 1038), "acc": (1039, 1040)}

SINGLE_TRACK = ("mixed", "mixed_pro")
INTERLEAVING = ("interleaving_A_V", "interleaving_V_A")
PARALLEL = ("parallel_std", "parallel_A_V", "parallel_V_A")
PATTERNS = SINGLE_TRACK + INTERLEAVING + PARALLEL
DUAL_TRACK = INTERLEAVING + PARALLEL


def check_pattern(pattern: str, allowed: tuple[str, ...] = PATTERNS) -> str:
    """Return ``pattern`` if it is one of ``allowed``, else raise a ValueError naming the valid ones."""
    if pattern not in allowed:
        raise ValueError(f"unknown track pattern {pattern!r}: expected one of {', '.join(allowed)}.")
    return pattern


def streams(pattern: str, K: int = 8) -> int:
    """Number of token streams (embedding tables / heads): 2K for the parallel patterns, else K."""
    return 2 * K if check_pattern(pattern) in PARALLEL else K


def delay(codes: torch.Tensor, bos: int = BOS, eos: int = EOS, keep_start: bool = False) -> torch.Tensor:
    """``[..., K, T]`` codes -> ``[..., K, T+K]`` delayed labels (``[..., K, T+K+1]`` with ``keep_start``)."""
    codes = codes.long()
    K, T = codes.shape[-2:]
    out = codes.new_full((*codes.shape[:-1], T + K), eos)
    for k in range(K):
        out[..., k, :k] = bos
        out[..., k, k:k + T] = codes[..., k, :]
    if keep_start:
        out = torch.cat([out.new_full((*out.shape[:-1], 1), bos), out], dim=-1)
    return out


def undelay(labels: torch.Tensor) -> torch.Tensor:
    """The exact inverse of :func:`delay` (without keep_start): ``[..., K, T+K]`` -> ``[..., K, T]``."""
    K, S = labels.shape[-2:]
    if S < K:
        raise ValueError(f"a delayed sequence of {K} codebooks needs at least {K} positions, got {S}.")
    return torch.stack([labels[..., k, k:k + S - K] for k in range(K)], dim=-2).long()


def strip_pattern(seq: torch.Tensor) -> torch.Tensor:
    """Generated ``[K, S]`` -> codes ``[K, T']``: undelay, then drop every frame holding a non-code (>= 1024 or < 0).

    Tolerant: the leading decoder-start column may be present or not (it undelays into an all-BOS frame), and a
    sequence cut at ``max_len`` keeps the frames that every codebook reached."""
    if seq.shape[-1] < seq.shape[-2]:
        return seq.new_zeros((seq.shape[-2], 0)).long()
    frames = undelay(seq)
    keep = ((frames >= 0) & (frames < CODEBOOK_SIZE)).all(dim=-2)
    return frames[..., keep]


def shift_right(labels: torch.Tensor, start: int = BOS, ignore: int = IGNORE_INDEX, pad: int = PAD) -> torch.Tensor:
    """Decoder input: ``labels`` shifted right by one along the last axis (same length), ``start`` first,
    every ``ignore`` replaced by ``pad``."""
    out = torch.cat([labels.new_full((*labels.shape[:-1], 1), start), labels[..., :-1]], dim=-1).long()
    return out.masked_fill(out == ignore, pad)


def remap_track(ref_ids: torch.Tensor, atype: str) -> torch.Tensor:
    """Stored ``ref_audio_ids_{atype}`` ``[..., K, T+K+1]`` (type bos/eos, start column kept) -> plain labels
    ``[..., K, T+K]`` with BOS/EOS 1025/1024."""
    check_track_type(atype)
    bos, eos = TRACK_SPECIAL[atype]
    ref_ids = ref_ids.long()
    if not bool((ref_ids[..., 0] == bos).all()):
        raise ValueError(f"ref_audio_ids_{atype} must start with a column of its bos {bos}: was it stored for {atype}?")
    out = ref_ids[..., 1:]
    return out.masked_fill(out == bos, BOS).masked_fill(out == eos, EOS)


def check_track_type(atype: str) -> str:
    """Return ``atype`` if it has type-specific ids (TRACK_SPECIAL), else raise a ValueError naming them."""
    if atype not in TRACK_SPECIAL:
        raise ValueError(f"unknown track type {atype!r}: expected one of {', '.join(TRACK_SPECIAL)}.")
    return atype


def _column(x: torch.Tensor, value: int) -> torch.Tensor:
    return x.new_full((*x.shape[:-1], 1), value)


def combine(acc_labels: torch.Tensor, vocal_labels: torch.Tensor, pattern: str) -> torch.Tensor:
    """Two delayed tracks ``[..., K, T+K]`` (same shape) -> the dual-track layout (see the module docstring):
    interleaving ``[..., K, 2(T+K)]``, parallel_std ``[..., 2K, T+K]``, parallel_A_V/V_A ``[..., 2K, T+K+1]``."""
    check_pattern(pattern, DUAL_TRACK)
    if acc_labels.shape != vocal_labels.shape:
        raise ValueError(f"acc and vocal labels must have the same shape, got {tuple(acc_labels.shape)} "
                         f"and {tuple(vocal_labels.shape)}.")
    acc, vocal = acc_labels.long(), vocal_labels.long()
    if pattern in INTERLEAVING:
        first, second = (acc, vocal) if pattern == "interleaving_A_V" else (vocal, acc)
        return torch.stack([first, second], dim=-1).flatten(-2)
    if pattern == "parallel_A_V":
        acc, vocal = torch.cat([acc, _column(acc, PAD)], -1), torch.cat([_column(vocal, BOS), vocal], -1)
    elif pattern == "parallel_V_A":
        acc, vocal = torch.cat([_column(acc, BOS), acc], -1), torch.cat([vocal, _column(vocal, PAD)], -1)
    return torch.cat([acc, vocal], dim=-2)


def split(combined: torch.Tensor, pattern: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`combine`: ``(acc_labels, vocal_labels)``. Interleaving takes the even/odd time indices
    (an odd-length generated row gives the first track one position more); parallel takes the first/last half
    of the streams and drops the extra BOS/PAD column of parallel_A_V/V_A."""
    check_pattern(pattern, DUAL_TRACK)
    if pattern in INTERLEAVING:
        first, second = combined[..., 0::2], combined[..., 1::2]
        return (first, second) if pattern == "interleaving_A_V" else (second, first)
    N = combined.shape[-2]
    if N % 2:
        raise ValueError(f"a parallel pattern has an even number of streams (2K), got {N}.")
    acc, vocal = combined[..., :N // 2, :], combined[..., N // 2:, :]
    if pattern == "parallel_A_V":
        acc, vocal = acc[..., :-1], vocal[..., 1:]
    elif pattern == "parallel_V_A":
        acc, vocal = acc[..., 1:], vocal[..., :-1]
    return acc, vocal


def pattern_length(T: int, K: int, pattern: str) -> int:
    """Length of the training labels of ``T`` frames in ``pattern`` (without the decoder-start column)."""
    check_pattern(pattern)
    if pattern in INTERLEAVING:
        return 2 * (T + K)
    return T + K + (1 if pattern in ("parallel_A_V", "parallel_V_A") else 0)


def pattern_mask(batch: int, K: int, max_len: int, pattern: str = "mixed",
                 prompt: torch.Tensor | None = None) -> torch.Tensor:
    """Forced tokens of a whole generated sequence ``[batch, streams(pattern, K), max_len]``: position 0 is the
    decoder-start column (BOS), then the layout of the most frames ``T`` that fit; ``-1`` marks the free
    positions, BOS/EOS/PAD the forced ones (a position left over by an odd interleaving length is PAD).

    ``prompt`` ``[batch, N, P]`` (e.g. the start column or a continuation) is copied over the first P positions;
    a -1 in it leaves that position as the pattern says."""
    check_pattern(pattern)
    T = (max_len - 1 - pattern_length(0, K, pattern)) // (2 if pattern in INTERLEAVING else 1)
    if T < 1:
        raise ValueError(f"max_len={max_len} is too short for pattern {pattern} with K={K}: "
                         f"it needs at least {1 + pattern_length(1, K, pattern)} positions.")
    free = delay(torch.full((K, T), FREE, dtype=torch.long))
    layout = free if pattern in SINGLE_TRACK else combine(free, free, pattern)
    layout = torch.cat([_column(layout, BOS), layout], dim=-1)
    layout = torch.cat([layout, layout.new_full((layout.shape[0], max_len - layout.shape[-1]), PAD)], dim=-1)
    mask = layout.expand(batch, -1, -1).clone()
    if prompt is not None:
        P = prompt.shape[-1]
        mask[..., :P] = torch.where(prompt >= 0, prompt.long(), mask[..., :P])
    return mask


def apply_mask(generated: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Overwrite the forced positions: ``generated [B, N, L]`` with ``mask [B, N, >= L]`` from :func:`pattern_mask`."""
    L = generated.shape[-1]
    if mask.shape[-1] < L:
        raise ValueError(f"the mask covers {mask.shape[-1]} positions but the sequence has {L}.")
    forced = mask[..., :L]
    return torch.where(forced == FREE, generated.long(), forced)


def pad_after_eos(seq: torch.Tensor) -> torch.Tensor:
    """Every token after the first EOS of a stream (last axis) becomes PAD."""
    ended_before = (torch.cumsum((seq == EOS).long(), dim=-1) - (seq == EOS).long()) > 0
    return seq.long().masked_fill(ended_before, PAD)


def force_step(tokens: torch.Tensor, mask_column: torch.Tensor, ended: torch.Tensor) -> torch.Tensor:
    """One sampling step ``tokens [B, N]``: the pattern's forced tokens (``mask[..., t]``), then PAD for every
    stream that has already emitted EOS (``ended [B, N]``, from earlier steps)."""
    tokens = torch.where(mask_column == FREE, tokens.long(), mask_column.long())
    return tokens.masked_fill(ended, PAD)


def eos_allowed(ended: torch.BoolTensor, group: int | None = None) -> torch.BoolTensor:
    """``ended [B, N]`` -> ``[B, N]``: stream k may emit EOS only once every stream < k of its group (groups of
    ``group`` consecutive streams, default all N; use ``group=K`` for parallel patterns, one group per track) has
    emitted EOS. The first stream of a group always may."""
    B, N = ended.shape
    group = group or N
    if N % group:
        raise ValueError(f"{N} streams do not split into groups of {group}.")
    grouped = ended.reshape(B, N // group, group).long()
    before = torch.cumprod(grouped, dim=-1)[..., :-1].bool()
    allowed = torch.cat([torch.ones_like(before[..., :1]), before], dim=-1)
    return allowed.reshape(B, N)


def order_eos(logits: torch.Tensor, ended: torch.BoolTensor, group: int | None = None,
              eos: int = EOS) -> torch.Tensor:
    """Logits processor ``[B, N, V]``: the EOS logit of stream k is -inf until :func:`eos_allowed` (spec §3.6)."""
    blocked = ~eos_allowed(ended, group)
    out = logits.clone()
    out[..., eos] = out[..., eos].masked_fill(blocked, float("-inf"))
    return out


def extract_codes(seq: torch.Tensor, pattern: str, has_start: bool = True):
    """One generated sample ``[N, L]`` -> codes: ``[K, T']`` for a single-track pattern, else ``(acc, vocal)``
    (each stripped on its own; the decoder-start column is dropped first when ``has_start``)."""
    check_pattern(pattern)
    body = seq[..., 1:] if has_start else seq
    if pattern in SINGLE_TRACK:
        return strip_pattern(body)
    acc, vocal = split(body, pattern)
    return strip_pattern(acc), strip_pattern(vocal)
