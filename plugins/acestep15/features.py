"""ACE-Step 1.5's frozen VAE as a core FrozenFeature (what the feature cache stores per song; the text side is
``encoders.ConditionFeature``).

:class:`VaePosteriorFeature` — ``example["audio"]`` ``(2, N)`` at 48 kHz → ``latent_mean`` and ``latent_std``
``(T, D)`` (time-major, ``T = N // 1920``), tiled as upstream preprocessing; a training step draws its latent with
:func:`audiotrain_acestep15.vae.sample` from a seeded generator (upstream samples once at preprocessing).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from audiotrain.data.streams import MAIN
from audiotrain.encoders.base import stable_hash
from audiotrain.encoders.frozen import FrozenFeature

from .vae import OobleckVAE

__all__ = ["VaePosteriorFeature"]


class VaePosteriorFeature(FrozenFeature):
    """Posterior mean and std of one song's latents (see the module doc)."""

    name = "latents"
    stream = MAIN

    def __init__(self, vae: OobleckVAE, *, chunk_seconds: float = 30.0, overlap_seconds: float = 2.0,
                 key: str | None = None):
        self.chunk_seconds, self.overlap_seconds = float(chunk_seconds), float(overlap_seconds)
        super().__init__(vae, key or stable_hash("acestep15-vae-posterior", vae.cache_key(), self.chunk_seconds,
                                                 self.overlap_seconds))

    def features(self, example: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        audio = example["audio"]
        length = int(example.get("audio_length", audio.shape[-1]))
        mean, std = self.module.encode_posterior(audio[..., :length].to(self.device), chunk_seconds=self.chunk_seconds,
                                                 overlap_seconds=self.overlap_seconds)
        return {"latent_mean": mean.to("cpu", torch.float32), "latent_std": std.to("cpu", torch.float32)}
