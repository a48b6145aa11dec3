"""Lyric tokenizer, text cleaning, language detection and the lyric feature seam (ACE-Step v1)."""
from __future__ import annotations

import json
import warnings

import pytest
import torch

from audiotrain_acestep.lang_detect import (UnsupportedLanguageWarning, canonical_lang, most_common_lang,
                                            segment)
from audiotrain_acestep.lyric_features import LyricTokenizerFeature
from audiotrain_acestep.lyric_tokenizer import (LANG_TAG_IDS, STRUCTURE_TAGS, LyricTokenizer,
                                                build_fallback_vocab_json)
from audiotrain_acestep.text_normalize import clean_text, int_to_words, int_to_zh


@pytest.fixture(scope="module")
def tok() -> LyricTokenizer:
    return LyricTokenizer()


def test_fallback_vocab_layout(tok):
    assert tok.vocab_size == 6693
    t = tok._tok
    assert [t.id_to_token(i) for i in (0, 1, 2, 261)] == ["[STOP]", "[UNK]", "[SPACE]", "[START]"]
    assert t.token_to_id("[zh-cn]") == 5023
    for lang, i in LANG_TAG_IDS.items():
        assert t.token_to_id("[zh-cn]" if lang == "zh" else f"[{lang}]") == i
    assert [t.token_to_id(s) for s in STRUCTURE_TAGS] == list(range(6681, 6693))
    assert build_fallback_vocab_json() == build_fallback_vocab_json()
    assert tok.cache_key() == LyricTokenizer().cache_key()


def test_blank_and_placeholder_lyrics(tok):
    assert tok.tokenize_lyrics("") == [0]
    assert tok.tokenize_lyrics("  \n\n ") == [0]
    assert tok.tokenize_lyrics("write a pop song that genre is rock") == [0]


def test_english_lyric_structure(tok):
    ids = tok.tokenize_lyrics("[Verse]\nHello world\nI have 2 cats")
    hello, cats = tok.encode("Hello world", "en"), tok.encode("I have 2 cats", "en")
    assert ids == [261, 259, 6683, 2] + hello + [2] + cats + [2]
    assert hello[0] == 259 and cats[0] == 259 and 1 not in ids
    assert tok.decode(hello) == "[en]hello world"
    assert tok.decode(cats) == "[en]i have two cats"
    assert tok.encode("I have two cats", "en") == cats


def test_blank_line_and_chorus_tag(tok):
    ids = tok.tokenize_lyrics("[chorus]\n\nla")
    assert ids == [261, 259, 6684, 2, 2] + tok.encode("la", "en") + [2]


def test_encode_replaces_spaces(tok):
    ids = tok.encode("ab cd", "en")
    assert ids[0] == 259 and ids.count(2) == 1
    assert tok.decode(ids) == "[en]ab cd"


def test_chinese_lyric_pinyin(tok):
    assert tok.clean("你好世界", "zh") == "ni3hao3shi4jie4"
    ids = tok.tokenize_lyrics("你好世界")
    assert ids[:2] == [261, 5023] and ids[-1] == 2 and 1 not in ids
    assert tok.decode(ids[1:-1]) == "[zh-cn]ni3hao3shi4jie4"
    assert tok.encode("你好", "zh-CN") == tok.encode("你好", "zh")


def test_english_cleaning():
    assert clean_text("I have 2 cats", "en") == "i have two cats"
    assert clean_text('"Mr. Smith"  &  me: 50%', "en") == "mister smith and me: fifty percent"
    assert clean_text("the 21st of 1,000 and $2.50", "en") == \
        "the twenty-first of one thousand and two dollars and fifty cents"
    assert clean_text("pi is 3.14", "en") == "pi is three point one four"
    assert int_to_words(123) == "one hundred and twenty-three"
    assert int_to_words(2024) == "two thousand and twenty-four"


def test_chinese_numbers():
    assert [int_to_zh(n) for n in (10, 15, 105, 1005, 20240, 100010000)] == \
        ["十", "十五", "一百零五", "一千零五", "二万零二百四十", "一亿零一万"]
    assert clean_text("2个", "zh") == "er4ge4"
    assert clean_text("50%", "zh") == "bai3fen1zhi1wu3shi2"


def test_korean_japanese_kept(tok):
    assert clean_text("안녕 Hello", "ko") == "안녕 hello"
    ids = tok.tokenize_lyrics("안녕하세요")
    assert ids[:2] == [261, 6152] and ids[-1] == 2


def test_unsupported_script_falls_back_to_en(tok):
    with pytest.warns(UnsupportedLanguageWarning):
        ids = tok.tokenize_lyrics("สวัสดีครับ")
    assert ids[:2] == [261, 259] and ids[-1] == 2
    with pytest.warns(UnsupportedLanguageWarning):
        assert canonical_lang("xx") == "en"


def test_unk_retry_uses_line_language(tok):
    # Most letters are Latin → song language en; the Hangul line gives [UNK] as [en] (no Hangul pieces in
    # the fallback vocab) and is retried with its own language (ko).
    ids = tok.tokenize_lyrics("hello there my friend\n안녕")
    first = tok.encode("hello there my friend", "en")
    assert 1 in tok.encode("안녕", "en")
    assert ids == [261] + first + [2] + tok.encode("안녕", "ko") + [2]
    assert ids[len(first) + 2] == 6152


def test_truncation(tok):
    ids = tok.tokenize_lyrics("la la la la\n" * 2000)
    assert len(ids) == 4096 and ids[0] == 261


def test_language_detection():
    assert segment("hello 你好 world") == [("hello ", "en"), ("你好 ", "zh"), ("world", "en")]
    assert segment("こんにちは世界") == [("こんにちは世界", "ja")]
    assert segment("") == []
    assert most_common_lang("") == "en"
    assert most_common_lang("Привет мир") == "ru"
    assert most_common_lang("niño querido") == "es"
    assert most_common_lang("Größe") == "de"
    assert most_common_lang("a café in town") == "en"
    assert most_common_lang("你好世界 hi") == "zh"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert most_common_lang("123 !!") == "en"


def test_load_vocab_json(tmp_path):
    vocab = {"[STOP]": 0, "[UNK]": 1, "[SPACE]": 2, "[en]": 3, "h": 4, "i": 5, "y": 6, "o": 7, "u": 8,
             "hi": 9}
    doc = {"version": "1.0", "truncation": None, "padding": None,
           "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                             "normalized": False, "special": True}
                            for t, i in vocab.items() if t.startswith("[")],
           "normalizer": None, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None,
           "decoder": None,
           "model": {"type": "BPE", "dropout": None, "unk_token": "[UNK]", "continuing_subword_prefix": None,
                     "end_of_word_suffix": None, "fuse_unk": False, "vocab": vocab, "merges": ["h i"]}}
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    t = LyricTokenizer(path)
    assert t.vocab_size == 10
    assert t.encode("Hi you!", "en") == [3, 9, 2, 6, 7, 8, 1]
    assert t.cache_key() != LyricTokenizer().cache_key()
    with pytest.raises(FileNotFoundError, match="lyric vocabulary not found"):
        LyricTokenizer(tmp_path / "missing.json")


def test_lyric_feature(tok):
    feat = LyricTokenizerFeature(tok)
    assert feat.name == "lyrics" and feat.stream is None
    out = feat.encode({"lyrics": ""})
    assert out["lyric_token_ids"].tolist() == [0] and out["lyric_mask"].tolist() == [1.0]
    out = feat.encode({"lyrics": "[verse]\nhi"})
    assert out["lyric_token_ids"].dtype == torch.long and out["lyric_mask"].dtype == torch.float32
    assert out["lyric_token_ids"].tolist() == tok.tokenize_lyrics("[verse]\nhi")
    assert out["lyric_mask"].shape == out["lyric_token_ids"].shape
    assert feat.encode({"norm_lyrics": "hi"})["lyric_token_ids"].tolist() == tok.tokenize_lyrics("hi")
    assert feat.cache_key() == LyricTokenizerFeature(LyricTokenizer()).cache_key()
