"""TorToiSe's text tokenizer on the built-in vocabulary (ids of a few strings worked out from its layout), the
characters that become [UNK]/[STOP], mrq's cleaner rule from the json's language, english_cleaners' numbers and
abbreviations, and bad tokenizer files."""
from __future__ import annotations

import json

import pytest

from audiotrain.safe_files import BadFileError
from audiotrain_tortoise.cleaners import basic_cleaners, cardinal, english_cleaners, expand_numbers, ordinal
from audiotrain_tortoise.tokenizer import BUILTIN_VOCAB, VoiceTokenizer
from tests.weight_files import assert_sentence


def letter(ch: str) -> int:
    return 14 + ord(ch) - ord("a")


def test_builtin_vocabulary_layout():
    vocab = BUILTIN_VOCAB["model"]["vocab"]
    assert [vocab[t] for t in ("[STOP]", "[UNK]", "[SPACE]", "!", "'", "?", "a", "z")] == [0, 1, 2, 3, 4, 13, 14, 39]
    assert (vocab["th"], vocab["he"], vocab["the"], vocab["ing"]) == (40, 41, 42, 47)
    assert VoiceTokenizer().vocab_size == 48


def test_encode_on_the_builtin_vocabulary():
    tok = VoiceTokenizer()
    assert tok.cleaner == "basic" and tok.language is None
    assert tok.encode("the cat") == [42, 2, letter("c"), letter("a"), letter("t")]
    assert tok.encode("Hello, World!") == [41, letter("l"), letter("l"), letter("o"), 7, 2, letter("w"), letter("o"),
                                           letter("r"), letter("l"), letter("d"), 3]
    # basic_cleaners keeps a leading space (whisper's lines start with one) and collapses runs
    assert tok.encode("  sing  it") == [2, letter("s"), 47, 2, letter("i"), letter("t")]
    assert tok.decode(tok.encode("  sing  it")) == " sing it"


def test_unknown_characters_are_found():
    tok = VoiceTokenizer()
    ids = tok.encode('naïve 3 "cats"')
    assert ids.count(1) == 4
    assert tok.unknown_characters('naïve 3 "cats"') == ["ï", "3", '"']
    assert tok.unknown_characters("the cat sat.") == [] and 1 not in tok.encode("the cat sat.")
    english = VoiceTokenizer(cleaner="english")  # english_cleaners spells the number, transliterates, drops '"'
    assert english.clean('naïve 3 "cats"') == "naive three cats"
    assert english.unknown_characters('naïve 3 "cats"') == []


def test_the_cleaner_follows_the_json_language(tmp_path):
    doc = json.loads(json.dumps(BUILTIN_VOCAB))
    (tmp_path / "tortoise.json").write_text(json.dumps(doc))
    doc["model"]["language"] = "en"
    (tmp_path / "english.json").write_text(json.dumps(doc))
    plain, english = VoiceTokenizer(tmp_path / "tortoise.json"), VoiceTokenizer(tmp_path / "english.json")
    assert (plain.cleaner, english.cleaner, english.language) == ("basic", "english", "en")
    assert plain.encode("Dr. Who") == VoiceTokenizer().encode("Dr. Who")
    assert english.clean("Dr. Who") == "doctor who" and plain.clean("Dr. Who") == "dr. who"
    assert plain.cache_key() != english.cache_key()
    assert plain.cache_key() == VoiceTokenizer(tmp_path / "tortoise.json").cache_key()


def test_english_cleaners():
    assert english_cleaners('Mr. Smith paid $5.50 on the 21st of May, 1999.') == (
        "mister smith paid five dollars, fifty cents on the twenty-first of may, nineteen ninety-nine.")
    assert english_cleaners("St. Louis  has 5,234 people") == (
        "saint louis has five thousand, two hundred thirty-four people")
    # TorToiSe transliterates first: "£" is "PS" by then, so its pounds rule only fires on raw text
    assert english_cleaners("£3") == "psthree" and expand_numbers("£3") == "three pounds"
    assert expand_numbers("1905 2000 2007 1900 1000 3.14 $1 $0.01") == (
        "nineteen oh five two thousand two thousand seven nineteen hundred one thousand three point fourteen "
        "one dollar one cent")
    assert cardinal(101) == "one hundred one" and cardinal(1_000_017) == "one million, seventeen"
    assert [ordinal(n) for n in (1, 12, 20, 103)] == ["first", "twelfth", "twentieth", "one hundred third"]
    assert english_cleaners("Café “quoted” — naïve") == "cafe quoted -- naive"
    assert basic_cleaners(" Hello\n\tWorld ") == " hello world "


def test_bad_tokenizer_files(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(BadFileError) as err:
        VoiceTokenizer(bad, option="model.tokenizer_path")
    assert_sentence(str(err.value), "model.tokenizer_path", "not a tokenizers JSON", "tokenizer.json")
    bad.write_text(json.dumps({"model": {"type": "nothing"}}))
    with pytest.raises(BadFileError, match="is not a tokenizers file"):
        VoiceTokenizer(bad)
    with pytest.raises(BadFileError, match="no such file"):
        VoiceTokenizer(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="cleaner"):
        VoiceTokenizer(cleaner="french")
