"""SongGen's lyrics ids: the core VoiceBpe tokenizer (:mod:`audiotrain.encoders.voice_bpe`) with SongGen's rule.

- ``lyrics_tokenizer(vocab_path=None) -> VoiceBpe``: SongGen's ``songgen/lyrics_utils/vocab.json`` (6681 ids,
  read as data; ``model.lyrics_vocab_path``), or without a path the built-in fallback vocabulary of the same
  6681-id layout (tiny preset, tests). The file must have SongGen's special ids ([STOP]=0, [SPACE]=2, [en]=259,
  [START]=261): the rule below hard-codes them.
- ``lyrics_ids(text, tokenizer) -> list[int]`` (spec §2 step 3): ``text.strip()`` with every ``"\\n"`` → ``"."``,
  then ``[261] + tokenizer.encode(text, "en") + [0]``; empty (or blank) lyrics → ``[261, 0]``. Every song is
  tokenised as English, as in SongGen's preprocessing (no language detection).
- ``LyricsFeature``: the core FrozenEncoder seam (name ``"lyrics"``, text only): ``example["lyrics"]``
  (None/missing → ``""``) → ``{"lyrics_ids": LongTensor[L]}``. Its cache key follows the vocabulary's content,
  the core cleaners' version and this rule's version. Padding (right, with 0) is the collator's business.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from audiotrain.encoders.base import FrozenEncoder, stable_hash
from audiotrain.encoders.voice_bpe import BASE_VOCAB_SIZE, LANG_TAG_IDS, SPACE_ID, START_ID, STOP_ID, VoiceBpe

#: bump when ``lyrics_ids`` changes (part of the cache key)
RULE_VERSION = "songgen-lyrics-v1"
#: SongGen's lyrics vocabulary size (the model's prompt embedding table has 7000 rows)
VOCAB_SIZE = BASE_VOCAB_SIZE
LYRICS_OPTION = "model.lyrics_vocab_path"
LYRICS_EXPECTED = "SongGen's songgen/lyrics_utils/vocab.json"
#: the ids ``lyrics_ids`` relies on
_REQUIRED = {"[STOP]": STOP_ID, "[SPACE]": SPACE_ID, "[en]": LANG_TAG_IDS["en"], "[START]": START_ID}


def lyrics_tokenizer(vocab_path: str | Path | None = None) -> VoiceBpe:
    """SongGen's lyrics tokenizer from ``vocab_path`` (read as data), or the built-in 6681-id vocabulary."""
    tok = VoiceBpe(vocab_path, option=LYRICS_OPTION, expected=LYRICS_EXPECTED)
    wrong = {t: tok.token_to_id(t) for t, i in _REQUIRED.items() if tok.token_to_id(t) != i}
    if wrong:
        from audiotrain.safe_files import BadFileError

        said = ", ".join(f"{t} is {i if i is not None else 'missing'} (SongGen: {_REQUIRED[t]})"
                         for t, i in wrong.items())
        raise BadFileError(f"{LYRICS_OPTION}={vocab_path} does not have SongGen's special ids ({said}); "
                           f"pass {LYRICS_EXPECTED}.")
    return tok


def lyrics_ids(text: str | None, tokenizer: VoiceBpe) -> list[int]:
    """SongGen's lyric ids of one song (module doc): ``[261] + encode(text with "\\n"→".", "en") + [0]``."""
    text = (text or "").strip().replace("\n", ".")
    if not text:
        return [START_ID, STOP_ID]
    return [START_ID, *tokenizer.encode(text, "en"), STOP_ID]


class LyricsFeature(FrozenEncoder):
    """``example["lyrics"]`` → ``{"lyrics_ids": LongTensor[L]}`` (see module doc)."""

    name = "lyrics"
    stream = None

    def __init__(self, tokenizer: VoiceBpe | None = None, vocab_path: str | Path | None = None):
        """Use ``tokenizer`` if given, else ``lyrics_tokenizer(vocab_path)`` (None → built-in vocabulary)."""
        self.tokenizer = tokenizer if tokenizer is not None else lyrics_tokenizer(vocab_path)

    def cache_key(self) -> str:
        """Changes with the vocabulary's content, the core cleaners' version and ``RULE_VERSION``."""
        return stable_hash("songgen-lyrics-feature", self.tokenizer.cache_key(RULE_VERSION))

    def encode(self, example: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """The lyric ids of one example as a LongTensor (at least ``[261, 0]``)."""
        ids = lyrics_ids(example.get("lyrics"), self.tokenizer)
        return {"lyrics_ids": torch.tensor(ids, dtype=torch.long)}
