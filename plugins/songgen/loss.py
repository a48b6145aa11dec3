"""SongGen training loss: per-stream cross entropy, the codebook-weight curriculum and the per-pattern totals
(spec §3.5).

Shapes: ``logits [B, N, S_logits, V]`` (one head per stream, ``S_logits >= S``), ``labels`` and ``decoder_input``
``[B, N, S]`` (labels padded with -100; ``decoder_input = patterns.shift_right(labels)``). N = K streams for
mixed / mixed_pro / interleaving, 2K for parallel patterns (acc streams 0..K-1, vocal streams K..2K-1).

Totals (``w`` = :func:`codebook_weights`, or uniform 1/K when ``weights`` is None, i.e. a plain mean):

- mixed, interleaving: ``sum_k w_k CE_k`` (interleaving heads see acc and vocal tokens alike);
- mixed_pro: ``sum_k w_k CE_k(mix) + vocal_weight * sum_k w_k CE_k(vocal)`` (vocal term only when vocal
  logits/labels are given, i.e. add_vocal_loss);
- parallel: ``0.5 * sum_k w_k CE_k + 0.5 * sum_k w_k CE_{K+k}``.

The loss is computed in float32 whatever the logits dtype (the original ran it under bf16 autocast).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .patterns import BOS, EOS, IGNORE_INDEX, PARALLEL, check_pattern

#: curriculum: alpha = ALPHAS[i] for the progress bucket i, where p <= boundary belongs to the lower bucket
ALPHA_BOUNDARIES = (0.3, 0.6, 0.8)
ALPHAS = (0.0, 0.3, 0.6, 0.8)


def base_weights(K: int = 8) -> torch.Tensor:
    """w0 ``[K]`` (float64, sums to 1): for K > 3 the first three codebooks get 0.25 each and the other K-3 share
    the remaining 0.25 equally (K=8: [0.25, 0.25, 0.25, 0.05 x 5], the original); for K <= 3 it is uniform."""
    if K < 1:
        raise ValueError(f"the number of codebooks K must be at least 1, got {K}.")
    if K <= 3:
        return torch.full((K,), 1.0 / K, dtype=torch.float64)
    return torch.tensor([0.25] * 3 + [0.25 / (K - 3)] * (K - 3), dtype=torch.float64)


def curriculum_alpha(step: int, total_steps: int) -> float:
    """alpha for p = step / total_steps: 0 if p <= 0.3, 0.3 if p <= 0.6, 0.6 if p <= 0.8, else 0.8."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive to compute the codebook-weight curriculum, got {total_steps}.")
    p = torch.tensor(step / total_steps, dtype=torch.float64)
    # right=False: boundaries[i-1] < p <= boundaries[i] -> i, so p == 0.3 stays in bucket 0
    bucket = torch.bucketize(p, torch.tensor(ALPHA_BOUNDARIES, dtype=torch.float64), right=False)
    return ALPHAS[int(bucket)]


def codebook_weights(step: int, total_steps: int, K: int = 8) -> torch.Tensor:
    """Curriculum weights ``[K]`` float32: ``(1 - alpha) * w0 + alpha / K`` (spec §3.5); they sum to 1."""
    alpha = curriculum_alpha(step, total_steps)
    w = (1.0 - alpha) * base_weights(K) + alpha / K
    assert torch.isclose(w.sum(), torch.tensor(1.0, dtype=torch.float64)), w
    return w.float()


def codebook_ce(logits: torch.Tensor, labels: torch.Tensor, decoder_input: torch.Tensor) -> torch.Tensor:
    """Per-stream mean cross entropy ``[N]`` (float32) over the scored tokens of the whole batch.

    ``logits`` are cut to their last ``S = labels.shape[-1]`` positions. BOS labels are ignored and a token is
    scored where ``decoder_input != EOS`` and the label is not -100: each stream keeps exactly one EOS target and
    no padding. A stream without any scored token gives 0 (still attached to the graph), never NaN."""
    S = labels.shape[-1]
    if logits.shape[:2] != labels.shape[:2] or labels.shape != decoder_input.shape or logits.shape[2] < S:
        raise ValueError(f"logits {tuple(logits.shape)} do not fit labels {tuple(labels.shape)} and decoder input "
                         f"{tuple(decoder_input.shape)}: expected [B, N, >=S, V], [B, N, S] and [B, N, S].")
    logits = logits[:, :, -S:, :]
    labels = labels.long().masked_fill(labels == BOS, IGNORE_INDEX)
    scored = (decoder_input != EOS) & (labels != IGNORE_INDEX)
    targets = labels.masked_fill(~scored, IGNORE_INDEX)
    losses = []
    for k in range(labels.shape[1]):
        total = F.cross_entropy(logits[:, k].float().transpose(1, 2), targets[:, k],
                                ignore_index=IGNORE_INDEX, reduction="sum")
        losses.append(total / scored[:, k].sum().clamp(min=1))
    return torch.stack(losses)


def align_vocal(vocal_labels: torch.Tensor, S: int) -> torch.Tensor:
    """Frame-aligned vocal labels ``[..., K, S_v]`` -> ``[..., K, S]``: trimmed, or padded with -100 at the end."""
    S_v = vocal_labels.shape[-1]
    if S_v >= S:
        return vocal_labels[..., :S]
    pad = vocal_labels.new_full((*vocal_labels.shape[:-1], S - S_v), IGNORE_INDEX)
    return torch.cat([vocal_labels, pad], dim=-1)


def _weighted(ce: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (ce * w).sum()


def songgen_loss(logits: torch.Tensor, labels: torch.Tensor, decoder_input: torch.Tensor, *, pattern: str,
                 weights: torch.Tensor | None = None, vocal_logits: torch.Tensor | None = None,
                 vocal_labels: torch.Tensor | None = None, vocal_weight: float = 0.1) -> dict[str, torch.Tensor]:
    """The training objective of ``pattern`` (module docstring) and what is logged with it.

    ``weights [K]`` are the codebook weights (None: codebook_weighting off, a plain mean). mixed_pro may add
    ``vocal_logits [B, K, S_logits, V]`` (the vocal heads) and ``vocal_labels [B, K, S]`` (already
    :func:`align_vocal`-ed; scored with the same ``decoder_input``). Returns ``loss`` (to optimise),
    ``weighted_loss`` (the main term), ``code_loss_{k}`` for every stream, ``loss_weight_{k}`` (k < K); with vocal
    labels ``vocal_loss`` (plain mean of the vocal CE), ``vocal_code_loss_{k}``, ``vocal_weighted_loss``; for
    parallel patterns ``acc_head_weighted_loss`` and ``vocal_head_weighted_loss``. All are float32 tensors."""
    check_pattern(pattern)
    N = labels.shape[1]
    if pattern in PARALLEL and N % 2:
        raise ValueError(f"a parallel pattern needs 2K streams, got {N}.")
    K = N // 2 if pattern in PARALLEL else N
    if (vocal_logits is None) != (vocal_labels is None):
        raise ValueError("vocal_logits and vocal_labels go together: give both or neither.")
    if vocal_logits is not None and pattern != "mixed_pro":
        raise ValueError(f"vocal heads belong to the mixed_pro pattern, not {pattern}.")
    ce = codebook_ce(logits, labels, decoder_input)
    if weights is None:
        w = torch.full((K,), 1.0 / K, device=ce.device)
    else:
        w = torch.as_tensor(weights, dtype=torch.float32, device=ce.device)
        if w.shape != (K,):
            raise ValueError(f"weights must have shape ({K},) for {N} streams of {pattern}, got {tuple(w.shape)}.")
    out: dict[str, torch.Tensor] = {}
    if pattern in PARALLEL:
        out["acc_head_weighted_loss"] = _weighted(ce[:K], w)
        out["vocal_head_weighted_loss"] = _weighted(ce[K:], w)
        main = 0.5 * out["acc_head_weighted_loss"] + 0.5 * out["vocal_head_weighted_loss"]
    else:
        main = _weighted(ce, w)
    out["weighted_loss"] = main
    total = main
    if vocal_logits is not None:
        vocal_ce = codebook_ce(vocal_logits, vocal_labels, decoder_input)
        out["vocal_loss"] = vocal_ce.mean()
        out["vocal_weighted_loss"] = _weighted(vocal_ce, w)
        total = total + vocal_weight * out["vocal_weighted_loss"]
        out.update({f"vocal_code_loss_{k}": vocal_ce[k] for k in range(K)})
    out["loss"] = total
    out.update({f"code_loss_{k}": ce[k] for k in range(N)})
    out.update({f"loss_weight_{k}": w[k] for k in range(K)})
    return out

