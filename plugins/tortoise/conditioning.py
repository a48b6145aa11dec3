"""UnifiedVoice's conditioning encoder: one reference clip's mel spectrogram → one conditioning vector.

``ConditioningEncoder(spec_dim=80, dim, heads, blocks=6, residual)``: ``init`` Conv1d(80 → dim, kernel 1), then
``attn.0 .. attn.5`` attention blocks; the output is the feature vector of frame 0, (B, dim). State-dict names
per block: ``norm.{weight,bias}`` (GroupNorm), ``qkv.{weight,bias}`` (Conv1d dim → 3·dim, kernel 1),
``proj_out.{weight,bias}`` (Conv1d dim → dim, kernel 1, zero-initialised).

Attention block, with ``n = norm(x)``: ``h = proj_out(attention(qkv(n)))`` and the residual the two codebases
disagree on (spec §3.1, measured): ``residual="tortoise"`` returns ``x + h`` (tortoise-tts, what the released
model plays at inference), ``residual="dlas"`` returns ``n + h`` (DL-Art-School, what AIVC's fine-tunes are
trained with). On the same weights the latents differ by up to ~1.9.

The "legacy" QKV attention: the 3·dim channels of ``qkv`` are split per head first (head ``i`` owns channels
``[3·c·i, 3·c·(i+1))``, c = dim / heads, as q, k, v thirds of that slice), each of q and k is scaled by
``c ** -0.25``, softmax over keys in float32, every frame attends to every frame (no mask).

GroupNorm groups follow TorToiSe's ``normalization`` rule: 32, or 8 for ≤ 16 channels, 16 for ≤ 64, halved until
it divides the channels (1024 → 32, the tiny 64 → 16); computed in float32 and cast back.
"""
from __future__ import annotations

import torch
from torch import nn

RESIDUALS = ("tortoise", "dlas")


def norm_groups(channels: int) -> int:
    """GroupNorm groups for ``channels`` (TorToiSe's rule, see the module doc)."""
    groups = 8 if channels <= 16 else 16 if channels <= 64 else 32
    while channels % groups:
        groups //= 2
    if groups <= 2:
        raise ValueError(f"{channels} channels leave only {groups} GroupNorm groups; use a width divisible by 4")
    return groups


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32, returned in the input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def legacy_qkv_attention(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, 3·H·c, T) → (B, H·c, T): per-head split first, q and k scaled by c**-0.25 each (module doc)."""
    b, width, length = qkv.shape
    ch = width // (3 * heads)
    q, k, v = qkv.reshape(b * heads, 3 * ch, length).split(ch, dim=1)
    scale = ch ** -0.25
    weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
    weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
    return torch.einsum("bts,bcs->bct", weight, v).reshape(b, -1, length)


class AttentionBlock(nn.Module):
    """``norm``, ``qkv``, ``proj_out``; the residual per ``residual`` (module doc)."""

    def __init__(self, channels: int, heads: int, residual: str = "tortoise") -> None:
        super().__init__()
        if residual not in RESIDUALS:
            raise ValueError(f"residual={residual!r} is unknown; use one of {RESIDUALS}")
        self.heads, self.residual = heads, residual
        self.norm = GroupNorm32(norm_groups(channels), channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.norm(x)
        h = self.proj_out(legacy_qkv_attention(self.qkv(n), self.heads))
        return (x if self.residual == "tortoise" else n) + h


class ConditioningEncoder(nn.Module):
    """(B, spec_dim, T) mel → (B, dim): ``init`` conv, the attention blocks, frame 0."""

    def __init__(self, spec_dim: int, dim: int, heads: int, blocks: int = 6, residual: str = "tortoise") -> None:
        super().__init__()
        self.init = nn.Conv1d(spec_dim, dim, 1)
        self.attn = nn.Sequential(*(AttentionBlock(dim, heads, residual) for _ in range(blocks)))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.attn(self.init(mel))[:, :, 0]
