"""ACE-Step v1 lyric tokenizer: the core VoiceBpe tokenizer plus the dataset's ``tokenize_lyrics`` logic.

The generic parts (BPE read as data, cleaners, ``[lang]`` prefix, ``[SPACE]``, the fallback vocabulary) live in
:mod:`audiotrain.encoders.voice_bpe`; this module adds ACE-Step's 12 structure tokens, language
canonicalisation and the per-line dataset logic, and re-exports the names it always had.

``LyricTokenizer(vocab_path=None)``
- With a path: loads ACE-Step's ``vocab.json`` (Hugging Face ``tokenizers`` JSON, BPE model, Whitespace
  pre-tokenizer; 6681 base + 12 added = 6693 ids) through the ``tokenizers`` library.
- Without: builds the deterministic built-in fallback vocabulary (``build_fallback_vocab_json``) of exactly
  6693 ids with the real file's special ids — for the tiny preset and tests (no file needed).

``encode(text, lang) -> list[int]``: ``clean_text`` (text_normalize), prefix ``[{lang}]`` (zh → ``[zh-cn]``),
every space → ``[SPACE]``, BPE ids. ``lang`` is canonicalised (region stripped; unsupported → en + warning).

``tokenize_lyrics(lyrics) -> list[int]`` (dataset/training behaviour, spec §3):
- blank lyrics, or lyrics matching ``write a .* song that genre is`` (re.search) → ``[0]``;
- else ``[261]`` ([START]), then ``lang = most_common_lang(lyrics)`` and for each ``\\n``-line (stripped):
  blank → ``[2]``; a structure tag line (``^\\[.*?\\]``) → ``encode(line, "en") + [2]``; otherwise
  ``encode(line, lang)``, and if that contains 1 ([UNK]) ``encode(line, most_common_lang(line))`` instead,
  then ``+ [2]``. The result is truncated to 4096 ids.
- Deviation: the original iterated LangSegment segments (so a mixed-script line could be split in two, each
  part with its own language tag and trailing [SPACE]); here lines stay whole and the retry language is the
  line's own most common language. Unsupported languages never drop the song (they become en).
"""
from __future__ import annotations

import re
from pathlib import Path

from audiotrain.encoders.base import stable_hash
from audiotrain.encoders.voice_bpe import (BASE_VOCAB_SIZE, LANG_TAG_IDS, SPACE_ID, START_ID, STOP_ID, UNK_ID,
                                           VoiceBpe, _fallback_pieces, lang_tag, pinyin_version)
from audiotrain.encoders.voice_bpe import build_fallback_vocab_json as _core_fallback_vocab_json

from .lang_detect import canonical_lang, most_common_lang

__all__ = ["ALGO_VERSION", "STOP_ID", "UNK_ID", "SPACE_ID", "START_ID", "MAX_LYRIC_TOKENS", "BASE_VOCAB_SIZE",
           "VOCAB_SIZE", "LANG_TAG_IDS", "STRUCTURE_TAGS", "lang_tag", "build_fallback_vocab_json", "LyricTokenizer",
           "_fallback_pieces"]

#: bump when any output-changing part of cleaning/tokenisation changes (part of ``cache_key``)
ALGO_VERSION = "acestep-lyrics-v1"

MAX_LYRIC_TOKENS = 4096
VOCAB_SIZE = 6693

#: added structure tokens, ids 6681..6692 in this order
STRUCTURE_TAGS = ("[start]", "[intro]", "[verse]", "[chorus]", "[bridge]", "[outro]", "[end]", "[inst]",
                  "[solo]", "[hook]", "[pre-chorus]", "[break]")

_PROMPT_PLACEHOLDER = re.compile(r"write a .* song that genre is")
_STRUCTURE_LINE = re.compile(r"^\[.*?\]")
_EXPECTED = "ACE-Step's acestep/models/lyrics_utils/vocab.json"


def build_fallback_vocab_json() -> str:
    """The built-in vocabulary as ``tokenizers`` JSON: 6681 base ids + 12 added = 6693, deterministic.

    The core's fallback (:func:`audiotrain.encoders.voice_bpe.build_fallback_vocab_json`) with the structure
    tags at 6681..6692. Any cleaned Latin or pinyin text therefore encodes without [UNK]."""
    return _core_fallback_vocab_json(STRUCTURE_TAGS)


class LyricTokenizer(VoiceBpe):
    """ACE-Step lyric BPE tokenizer (see module doc). Thread-safe for encoding; holds no mutable state."""

    def __init__(self, vocab_path: str | Path | None = None):
        super().__init__(vocab_path, STRUCTURE_TAGS, option="model.lyric_vocab_path", expected=_EXPECTED)

    def cache_key(self) -> str:
        """Hash of the vocabulary content, the algorithm version and the pinyin library version."""
        return stable_hash(ALGO_VERSION, self.vocab_digest, pinyin_version())

    def clean(self, text: str, lang: str) -> str:
        """The cleaned text ``encode`` tokenises (without the language prefix)."""
        return super().clean(text, canonical_lang(lang))

    def encode(self, text: str, lang: str) -> list[int]:
        """Ids of ``[lang]`` + cleaned ``text`` with spaces as ``[SPACE]`` (module doc); ``lang`` canonicalised."""
        return super().encode(text, canonical_lang(lang))

    def tokenize_lyrics(self, lyrics: str) -> list[int]:
        """Dataset-path lyric ids (module doc): ``[0]`` for none, else ``[261, …]`` truncated to 4096."""
        if not lyrics or not lyrics.strip() or _PROMPT_PLACEHOLDER.search(lyrics):
            return [STOP_ID]
        lang = most_common_lang(lyrics)
        ids = [START_ID]
        for raw in lyrics.split("\n"):
            line = raw.strip()
            if not line:
                ids.append(SPACE_ID)
                continue
            if _STRUCTURE_LINE.match(line):
                line_ids = self.encode(line, "en")
            else:
                line_ids = self.encode(line, lang)
                if UNK_ID in line_ids:
                    line_lang = most_common_lang(line)
                    if line_lang != lang:
                        line_ids = self.encode(line, line_lang)
            ids.extend(line_ids)
            ids.append(SPACE_ID)
            if len(ids) >= MAX_LYRIC_TOKENS:
                break
        return ids[:MAX_LYRIC_TOKENS]
