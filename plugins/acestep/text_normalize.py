"""Multilingual lyric cleaning for the ACE-Step lyric tokenizer (VoiceBpeTokenizer's text front end).

The cleaners live in the core, :mod:`audiotrain.encoders.voice_bpe` (its module doc holds the ``clean_text``
contract); this module re-exports them under the names ACE-Step always used. ``lang`` is a supported code, see
``lang_detect.SUPPORTED_LANGS``.
"""
from __future__ import annotations

from audiotrain.encoders.voice_bpe import (clean_text, expand_numbers_en, expand_numbers_zh, expand_symbols,
                                           int_to_words, int_to_zh, ordinal_words, to_pinyin)

__all__ = ["clean_text", "expand_numbers_en", "expand_numbers_zh", "expand_symbols", "int_to_words", "int_to_zh",
           "ordinal_words", "to_pinyin"]
