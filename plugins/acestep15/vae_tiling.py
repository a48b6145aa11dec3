"""Tiled VAE encoding as ACE-Step 1.5's preprocessing does it (spec §3 step 2: 30 s chunks, 2 s overlap, overlap
discarded; 15 s chunks on small GPUs).

A song no longer than one chunk is encoded in one pass. A longer one is cut into cores of
``chunk - 2 * overlap`` samples; each core is encoded inside a window reaching ``overlap`` further on both sides
(clipped at the song's ends), and only the core's latent frames are kept. Chunk and overlap are whole latent
frames (multiples of the hop), so every window starts on a frame boundary and the kept frames are exactly the
frames a one-pass encode gives, up to float rounding, as long as the overlap exceeds the encoder's receptive
field (12,165 samples, about 0.25 s, on each side of a frame for the release ratios, measured
on the tiny preset, which has the same kernels, dilations and strides; 2 s is ample).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from audiotrain.errors import UserError

if TYPE_CHECKING:
    from .vae import OobleckVAE

__all__ = ["tile_plan", "tiled_moments"]


def tile_plan(samples: int, hop: int, chunk: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """``(window_start, window_end, keep_from, keep_to)`` per tile: audio samples of the window, and the range of
    latent frames (song frame indices) the tile contributes. One tile when ``samples <= chunk``."""
    frames = samples // hop
    if samples <= chunk:
        return [(0, samples, 0, frames)]
    stride = chunk - 2 * overlap
    plan = []
    for core_start in range(0, frames * hop, stride):
        core_end = min(core_start + stride, samples)
        win_start, win_end = max(0, core_start - overlap), min(samples, core_end + overlap)
        keep_from, keep_to = core_start // hop, min(core_end // hop, frames)
        if keep_to > keep_from:
            plan.append((win_start, win_end, keep_from, keep_to))
    return plan


def tiled_moments(vae: "OobleckVAE", audio: torch.Tensor, *, chunk_seconds: float = 30.0,
                  overlap_seconds: float = 2.0) -> torch.Tensor:
    """The encoder's output (posterior moments ``[B, 2D, S // hop]``) of ``audio [B, C, S]``, computed tile by tile
    (see the module doc)."""
    hop, rate = vae.hop_length, vae.sampling_rate
    chunk = int(round(chunk_seconds * rate / hop)) * hop
    overlap = int(round(overlap_seconds * rate / hop)) * hop
    if overlap < 0 or chunk - 2 * overlap < hop:
        raise UserError(f"a VAE chunk of {chunk_seconds} s with {overlap_seconds} s overlap on each side leaves no "
                        f"core to keep; use a chunk longer than twice the overlap (ACE-Step uses 30 s and 2 s).")
    weight = vae.encoder.conv1.weight_v
    audio = audio.to(weight.device, weight.dtype)
    frames = audio.shape[-1] // hop
    plan = tile_plan(audio.shape[-1], hop, chunk, overlap)
    if len(plan) == 1:
        return vae.encoder(audio)[..., :frames]
    parts = []
    for win_start, win_end, keep_from, keep_to in plan:
        moments = vae.encoder(audio[..., win_start:win_end])
        first = keep_from - win_start // hop
        parts.append(moments[..., first:first + keep_to - keep_from])
    out = torch.cat(parts, dim=-1)
    assert out.shape[-1] == frames, (out.shape, frames)
    return out
