"""ACE-Step's frozen encoders as core FrozenEncoders: DCAE latents, UMT5 text states, lyric ids, speaker.

Every one is wrapped in a LazyEncoder by ``encoders.py`` so a fully cached dataset never loads them.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from audiotrain.data.streams import MAIN
from audiotrain.encoders.base import FrozenEncoder, stable_hash
from audiotrain.encoders.frozen import FrozenFeature


class LatentFeature(FrozenFeature):
    """``example["audio"]`` (2, N) @ 48 kHz → ``{"latents": (8, 16, T), "latent_length": (1,) long}``."""

    name = "latents"
    stream = MAIN

    def features(self, example: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        audio = example["audio"]
        n = audio.shape[-1]
        latents, lengths = self.module.encode(audio[None].to(self.device), torch.tensor([n]))
        return {"latents": latents[0].to("cpu", torch.float32), "latent_length": lengths.to("cpu").view(1)}


class SpeakerFeature(FrozenEncoder):
    """Speaker embedding: the row's ``speaker_emb_path`` tensor if given, else zeros (the released model)."""

    name = "speaker"

    def __init__(self, dim: int):
        self.dim = int(dim)

    def cache_key(self) -> str:
        return stable_hash("acestep-speaker", self.dim)

    def encode(self, example: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        path = example.get("speaker_emb_path") or ""
        if not path:
            return {"speaker_emb": torch.zeros(self.dim)}
        emb = torch.load(path, map_location="cpu", weights_only=True)
        emb = torch.as_tensor(emb, dtype=torch.float32).reshape(-1)
        if emb.numel() != self.dim:
            raise ValueError(f"speaker embedding {path} has {emb.numel()} values, the model expects {self.dim}")
        return {"speaker_emb": emb}
