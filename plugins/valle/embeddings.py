"""VALL-E v5 input embeddings (spec valle.md §3.2): per-level audio tables and segment joining.

The model owns plain ``nn.Embedding`` tables for phonemes/langs/tasks/... and two
:class:`AudioEmbedding` stacks (``proms_emb``: one table per prompt level; ``resps_emb``:
``AR:0:0``, ``NAR:0:1`` ... ``NAR:{n-2}:{n-1}``, ``NAR:0:0``). One sample's input is a list of
segments joined by the learned ``sep`` vector; :func:`join_segments` builds the embedding rows
and the position ids.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence


class AudioEmbedding(nn.Module):
    """A stack of code tables, ``embeddings.{k}`` with ``sizes[k]`` rows each.

    ``forward(codes (T, k) long, offset)`` embeds k code levels with the tables
    ``offset .. offset + k - 1`` and returns (T, D):

    - ``sums=True`` (the released config): ``sum_j table[offset + j](codes[:, j])``, no normalisation;
    - ``sums=False``: only the top level, ``table[offset + k - 1](codes[:, k - 1])``.
    """

    def __init__(self, sizes: list[int], dim: int, sums: bool = True):
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(n, dim) for n in sizes)
        self.sums = sums

    def forward(self, codes: torch.Tensor, offset: int = 0) -> torch.Tensor:
        if codes.dim() == 1:
            codes = codes[:, None]
        k = codes.shape[1]
        if k < 1 or offset + k > len(self.embeddings):
            raise ValueError(f"cannot embed {k} code levels from table {offset}: only {len(self.embeddings)} tables")
        codes = codes.long()
        if not self.sums:
            return self.embeddings[offset + k - 1](codes[:, k - 1])
        out = self.embeddings[offset](codes[:, 0])
        for j in range(1, k):
            out = out + self.embeddings[offset + j](codes[:, j])
        return out


def segment_positions(lengths: list[int], unified: bool, device: torch.device | None = None) -> torch.Tensor:
    """Position ids (S,) for segments of the given lengths (each length already counts its sep).

    ``unified=False`` (the released config): every segment restarts at 0;
    ``unified=True``: 0 .. S-1 over the whole sequence.
    """
    if unified:
        return torch.arange(sum(lengths), device=device)
    return torch.cat([torch.arange(n, device=device) for n in lengths]) if lengths else torch.zeros(0, dtype=torch.long, device=device)


def join_segments(segments: list[torch.Tensor], sep: torch.Tensor, unified: bool) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Join (n_i, D) segments with ``sep`` (D,) after every segment but the last.

    Returns ``embeds`` (S, D), ``position_ids`` (S,) long, and the start index of every segment
    in the joined sequence. A sep counts as the last element of the segment before it (its
    position follows that segment's tokens when positions restart per segment).
    """
    parts, lengths, starts, cursor = [], [], [], 0
    sep_row = sep.reshape(1, -1)
    for i, seg in enumerate(segments):
        starts.append(cursor)
        parts.append(seg)
        n = seg.shape[0]
        if i < len(segments) - 1:
            parts.append(sep_row.to(seg.dtype))
            n += 1
        lengths.append(n)
        cursor += n
    embeds = torch.cat(parts, dim=0)
    return embeds, segment_positions(lengths, unified, embeds.device), starts


def pad_batch(embeds: list[torch.Tensor], positions: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad per-sample (S_b, D) embeddings and (S_b,) positions.

    Returns embeds (B, S, D) zero-padded, position_ids (B, S) (padding = 0) and lengths (B,) long.
    """
    lengths = torch.tensor([e.shape[0] for e in embeds], device=embeds[0].device)
    return pad_sequence(embeds, batch_first=True), pad_sequence(positions, batch_first=True), lengths
