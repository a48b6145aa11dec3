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
    """Speaker embedding: the row's ``speaker_emb_path`` tensor if given, else zeros (the released model).

    The file is read as data (``torch.load(weights_only=True)`` or safetensors, :mod:`audiotrain.safe_files`):
    one that needs full unpickling is refused unless ``trust_pickle`` (the DANGEROUS ``trust_pickle=true``)."""

    name = "speaker"
    EXPECTED = "a speaker embedding saved with torch.save(tensor) or as safetensors"

    def __init__(self, dim: int, trust_pickle: bool = False):
        self.dim = int(dim)
        self.trust_pickle = bool(trust_pickle)

    def cache_key(self) -> str:
        return stable_hash("acestep-speaker", self.dim)

    def encode(self, example: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        from audiotrain.safe_files import BadFileError, load_torch

        path = example.get("speaker_emb_path") or ""
        if not path:
            return {"speaker_emb": torch.zeros(self.dim)}
        emb = load_torch(path, option="speaker_emb_path", expected=self.EXPECTED, trust_pickle=self.trust_pickle)
        if isinstance(emb, dict) and len(emb) == 1:  # a safetensors file / a dict of one tensor
            emb = next(iter(emb.values()))
        if isinstance(emb, (list, tuple)) and all(isinstance(x, (int, float)) for x in emb):
            emb = torch.tensor(emb)
        if not isinstance(emb, torch.Tensor):
            raise BadFileError(f"speaker_emb_path={path} holds a {type(emb).__name__}, not a tensor; give "
                               f"{self.EXPECTED} ({self.dim} values).")
        emb = emb.to(torch.float32).reshape(-1)
        if emb.numel() != self.dim:
            raise BadFileError(f"speaker_emb_path={path} has {emb.numel()} values, the model expects {self.dim}; give "
                               f"a {self.dim}-value embedding of this model's speaker encoder.")
        return {"speaker_emb": emb}
