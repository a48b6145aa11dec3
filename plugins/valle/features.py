"""VALL-E's frozen encoders as core FrozenEncoders: phoneme ids from the transcript, EnCodec codes from the audio.

Both are cheap to key: the phoneme key is the phonemizer settings plus the symmap (or the content of the
BPE tokenizer.json, ``model.tokenizer_path``), the codec key is
the codec config plus a weights fingerprint, so a cached dataset needs neither espeak-ng nor the codec.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from audiotrain.data.streams import MAIN
from audiotrain.encoders.inputs import real_mono
from audiotrain.encoders.base import FrozenEncoder, stable_hash
from audiotrain.encoders.frozen import FrozenFeature

from audiotrain_valle.codec import Codec
from audiotrain_valle.phonemes import PhonemeBPE, Phonemizer, Symmap

INT16_MAX = 32767


class PhonemeFeature(FrozenEncoder):
    """``example["text"]`` (in ``example["language"]`` or the default) → ``{"phns": LongTensor(L)}``.

    ``phns`` is ``[<bos>=1, …, </eos>=2]``; the IPA string itself is not cached. ``symmap`` is anything with
    ``encode(ipa) -> ids`` and ``cache_key()``: a :class:`Symmap` or a :class:`PhonemeBPE`.
    """

    name = "phonemes"

    def __init__(self, phonemizer: Phonemizer | None = None, symmap: Symmap | PhonemeBPE | None = None,
                 language: str = "en-us"):
        self.phonemizer = phonemizer or Phonemizer(language)
        self.symmap = symmap or Symmap.builtin()

    def cache_key(self) -> str:
        return stable_hash("phonemes", self.phonemizer.cache_key(), self.symmap.cache_key())

    def encode(self, example: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        ipa = self.phonemizer.phonemize(str(example["text"]), example.get("language") or None)
        return {"phns": torch.tensor(self.symmap.encode(ipa), dtype=torch.long)}


class CodecFeature(FrozenFeature):
    """``example["audio"]`` (1, N) float at the codec's rate → ``{"codes": LongTensor(T, levels)}``.

    ``T = ceil(N / hop)``; every value is below the codebook size, so the codes also fit int16 (as the
    original's artifacts store them). The core has already mixed to mono and resampled to 24 kHz.
    """

    name = "codes"
    stream = MAIN

    def __init__(self, codec: Codec):
        if codec.codebook_size - 1 > INT16_MAX:
            raise ValueError(f"codebook_size {codec.codebook_size} does not fit int16")
        super().__init__(codec, stable_hash("codes", codec.cache_key()))

    def features(self, example: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        audio = real_mono(example, "the codec")
        return {"codes": self.module.encode(audio)}
