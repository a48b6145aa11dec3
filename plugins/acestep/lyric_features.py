"""The lyric tokenizer as a core ``FrozenEncoder`` seam (feature namespace ``"lyrics"``).

``LyricTokenizerFeature.encode(example)`` reads ``example["lyrics"]`` (falling back to ``"norm_lyrics"``, the
column name of ACE-Step's converted datasets; missing/None → ``""``) and returns
``{"lyric_token_ids": LongTensor(Ly), "lyric_mask": FloatTensor(Ly)}``.

The mask follows the dataset (training) path: all ones, including for empty lyrics, which give ids ``[0]`` and
mask ``[1.]``. (ACE-Step's inference pipeline instead uses mask ``[0]`` for empty lyrics; training condition
dropout zeroes ids and mask separately, in the model, not here.)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from audiotrain.encoders.base import FrozenEncoder, stable_hash

from .lyric_tokenizer import LyricTokenizer


class LyricTokenizerFeature(FrozenEncoder):
    """Lyrics string → ACE-Step lyric ids + mask (see module doc)."""

    name = "lyrics"

    def __init__(self, tokenizer: LyricTokenizer | None = None, vocab_path: str | Path | None = None):
        """Use ``tokenizer`` if given, else a ``LyricTokenizer(vocab_path)`` (None → built-in vocabulary)."""
        self.tokenizer = tokenizer if tokenizer is not None else LyricTokenizer(vocab_path)

    def cache_key(self) -> str:
        """Changes with the vocabulary content, the tokenisation algorithm and the mask convention."""
        return stable_hash("acestep-lyric-feature", "mask=ones", self.tokenizer.cache_key())

    def encode(self, example: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Lyrics of one example → ``lyric_token_ids`` (long) and ``lyric_mask`` (float ones), same length."""
        lyrics = example.get("lyrics")
        if lyrics is None:
            lyrics = example.get("norm_lyrics")
        ids = self.tokenizer.tokenize_lyrics(lyrics or "")
        return {
            "lyric_token_ids": torch.tensor(ids, dtype=torch.long),
            "lyric_mask": torch.ones(len(ids), dtype=torch.float32),
        }
