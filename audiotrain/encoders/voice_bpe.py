"""VoiceBpe lyrics tokenizer (the Coqui XTTS ``VoiceBpeTokenizer`` kind), model-agnostic.

Holds the parts every plugin with such a lyrics vocabulary shares: the multilingual cleaners, the ``[lang]``
prefix, spaces → ``[SPACE]``, a ``tokenizers`` BPE (Whitespace pre-tokenizer) read from a ``vocab.json`` as
data, and a deterministic built-in fallback vocabulary (for tiny models and tests, no file needed). What a
model does around it (start/stop ids, per-line logic, language detection) stays in its plugin.

``VoiceBpe(vocab_path=None, added_tokens=(), option=None, expected=...)``
- With a path: the file is read as text, parsed as JSON, then by ``tokenizers`` (never as code).
- Without: ``build_fallback_vocab_json(added_tokens)``: the 6681 base ids of the XTTS-style vocabulary
  (0 ``[STOP]``, 1 ``[UNK]``, 2 ``[SPACE]``, 261 ``[START]``, the language tags at ``LANG_TAG_IDS``) plus
  ``added_tokens`` at 6681, 6682, …
- ``encode(text, lang) -> list[int]``: ``[lang_tag(lang)] + clean_text(text, lang)``, every space →
  ``[SPACE]``, BPE ids. ``lang`` must already be a plain code (``en``, ``zh`` …): canonicalising or detecting
  languages is the caller's business.
- ``vocab_digest`` (sha256 of the vocabulary text) and ``cache_key(*extra)`` identify its output.

``clean_text(text, lang)`` contract:
1. Unicode NFKC (full-width forms → ASCII), typographic quotes/dashes/CJK punctuation → ASCII, ``"`` and the
   other double quotes dropped.
2. Lowercase (Turkish: ``I`` → ``ı``, ``İ`` → ``i`` first).
3. Numbers. ``zh``: ``50%`` → 百分之五十, integers read as Chinese numerals (二千零二十四), decimals with 点,
   digit-by-digit for leading zeros or > 16 digits. Every other language: English words, num2words style
   ("one hundred and twenty-three", "three point one four", "1st" → "first", "$5" → "five dollars",
   "1,000" → "one thousand"). Non-English Latin languages therefore read digits in English — a known, documented
   simplification (XTTS used num2words per language).
4. English abbreviations (``mr.`` → ``mister`` …) and symbols (``&`` → and, ``%`` → percent, ``@`` → at …;
   ``&``/``%`` get the language's own word where known).
5. Whitespace collapsed to single spaces, stripped.
6. ``zh`` only: pypinyin ``Style.TONE3`` with ``neutral_tone_with_five=True``, syllables joined WITHOUT spaces
   ("你好" → "ni3hao3"); non-Han text passes through.
``ko``/``ja`` are only lowercased: XTTS's romanisers (hangul-romanize, cutlet + MeCab dictionary) are not
available offline, so Hangul/Kana stay as they are (they may map to [UNK] in the vocabulary).
"""
from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from pathlib import Path
from typing import Sequence

from tokenizers import Tokenizer as HFTokenizer

from audiotrain.encoders.base import stable_hash

#: bump when any output-changing part of the cleaning or the encoding here changes (part of ``cache_key``)
ALGO_VERSION = "voice-bpe-v1"

STOP_ID, UNK_ID, SPACE_ID, START_ID = 0, 1, 2, 261
#: ids of the XTTS-style base vocabulary (before any added tokens)
BASE_VOCAB_SIZE = 6681
#: language → id of its ``[lang]`` tag in the XTTS-style vocabulary (zh is the token ``[zh-cn]``)
LANG_TAG_IDS = {"en": 259, "de": 260, "fr": 262, "es": 284, "it": 285, "pt": 286, "pl": 294, "tr": 295,
                "ru": 267, "cs": 293, "nl": 297, "ar": 5022, "zh": 5023, "ja": 5412, "hu": 5753, "ko": 6152,
                "hi": 6680}

_PUNCT_MAP = str.maketrans({
    "“": "", "”": "", "„": "", "«": "", "»": "", "「": "", "」": "", "『": "", "』": "", "《": "", "》": "",
    "‘": "'", "’": "'", "‚": "'", "`": "'", "´": "'",
    "—": "-", "–": "-", "‐": "-", "‑": "-", "…": "...", "。": ".", "、": ",", "・": " ", "【": "[", "】": "]",
    "〈": "", "〉": "", "\u3000": " ",
})

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ("", "thousand", "million", "billion", "trillion", "quadrillion")
_ORDINAL_IRREGULAR = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                      "nine": "ninth", "twelve": "twelfth"}
_CURRENCY = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
             "€": ("euro", "euros", "cent", "cents")}

_EN_ABBREVIATIONS = [(re.compile(rf"\b{a}\.", re.IGNORECASE), w) for a, w in (
    ("mrs", "misess"), ("mr", "mister"), ("dr", "doctor"), ("st", "saint"), ("co", "company"),
    ("jr", "junior"), ("maj", "major"), ("gen", "general"), ("drs", "doctors"), ("rev", "reverend"),
    ("lt", "lieutenant"), ("hon", "honorable"), ("sgt", "sergeant"), ("capt", "captain"), ("esq", "esquire"),
    ("ltd", "limited"), ("col", "colonel"), ("ft", "fort"))]

_AND = {"en": "and", "de": "und", "fr": "et", "es": "y", "it": "e", "pt": "e", "pl": "i", "tr": "ve",
        "ru": "и", "cs": "a", "nl": "en", "hu": "és", "zh": "和"}
_PERCENT = {"en": "percent", "de": "prozent", "fr": "pour cent", "es": "por ciento", "it": "per cento",
            "pt": "por cento", "pl": "procent", "tr": "yüzde", "ru": "процентов", "cs": "procent",
            "nl": "procent", "hu": "százalék"}
_EN_SYMBOLS = (("@", " at "), ("#", " hash "), ("°", " degrees "), ("+", " plus "))

_ZH_DIGITS = "零一二三四五六七八九"
_ZH_GROUPS = ("", "万", "亿", "万亿")


# ----------------------------------------------------------------------------------------- English numbers
def _below_thousand(n: int) -> str:
    """Words for 0 < n < 1000 ("one hundred and twenty-three")."""
    hundreds, rest = divmod(n, 100)
    parts = []
    if hundreds:
        parts.append(f"{_ONES[hundreds]} hundred")
    if rest:
        if rest < 20:
            words = _ONES[rest]
        else:
            words = _TENS[rest // 10] + (f"-{_ONES[rest % 10]}" if rest % 10 else "")
        parts.append(words)
    return " and ".join(parts)


def int_to_words(n: int) -> str:
    """English cardinal words for a non-negative integer (num2words style, without commas).

    Numbers of 10**18 or more are read digit by digit."""
    if n == 0:
        return "zero"
    if n >= 10 ** 18:
        return " ".join(_ONES[int(d)] for d in str(n))
    chunks = []
    i = 0
    while n:
        n, c = divmod(n, 1000)
        chunks.append((c, i))
        i += 1
    words = []
    for c, i in reversed(chunks):
        if c:
            words.append((_below_thousand(c) + (f" {_SCALES[i]}" if i else ""), c, i))
    if len(words) > 1 and words[-1][2] == 0 and words[-1][1] < 100:
        return " ".join(w for w, _, _ in words[:-1]) + " and " + words[-1][0]
    return " ".join(w for w, _, _ in words)


def ordinal_words(n: int) -> str:
    """English ordinal words ("first", "twenty-second", "one hundredth")."""
    words = int_to_words(n)
    head, sep, last = words.rpartition(" ")
    pre, hy, tail = last.rpartition("-")
    if tail in _ORDINAL_IRREGULAR:
        tail = _ORDINAL_IRREGULAR[tail]
    elif tail.endswith("y"):
        tail = tail[:-1] + "ieth"
    else:
        tail += "th"
    return head + sep + pre + hy + tail


def _decimal_words(m: str) -> str:
    whole, _, frac = m.partition(".")
    return f"{int_to_words(int(whole))} point " + " ".join(_ONES[int(d)] for d in frac)


def _currency(m: re.Match) -> str:
    one, many, sub_one, sub_many = _CURRENCY[m.group(1)]
    whole, _, frac = m.group(2).partition(".")
    units, cents = int(whole), int((frac + "00")[:2]) if frac else 0
    out = f"{int_to_words(units)} {one if units == 1 else many}"
    if cents:
        out += f" and {int_to_words(cents)} {sub_one if cents == 1 else sub_many}"
    return out


def expand_numbers_en(text: str) -> str:
    """Replace digits in ``text`` by English words (commas, currency, ordinals, decimals, integers)."""
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    text = re.sub(r"([$£€])\s?(\d+(?:\.\d+)?)", _currency, text)
    text = re.sub(r"(\d+)(st|nd|rd|th)\b", lambda m: ordinal_words(int(m.group(1))), text)
    text = re.sub(r"\d+\.\d+", lambda m: _decimal_words(m.group(0)), text)
    return re.sub(r"\d+", lambda m: int_to_words(int(m.group(0))), text)


# ----------------------------------------------------------------------------------------- Chinese numbers
def _zh_group(g: int) -> str:
    """Chinese reading of 0 < g < 10000 with inner zeros (一千零五)."""
    out, zero = "", False
    for pos, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        d = g // pos % 10
        if d == 0:
            zero = zero or bool(out)
            continue
        if zero:
            out += "零"
            zero = False
        out += _ZH_DIGITS[d] + unit
    return out


def int_to_zh(n: int) -> str:
    """Chinese numeral reading of a non-negative integer < 10**16 (十五, 一百零五, 二万零二百四十)."""
    if n == 0:
        return "零"
    groups = []
    while n:
        n, g = divmod(n, 10000)
        groups.append(g)
    out, gap = "", False
    for i in reversed(range(len(groups))):
        g = groups[i]
        if g == 0:
            gap = gap or bool(out)
            continue
        if out and (gap or g < 1000):
            out += "零"
        out += _zh_group(g) + _ZH_GROUPS[i]
        gap = False
    return out[1:] if out.startswith("一十") else out


def _zh_number(s: str) -> str:
    whole, _, frac = s.partition(".")
    if len(whole) > 16 or (len(whole) > 1 and whole.startswith("0")):
        head = "".join(_ZH_DIGITS[int(d)] for d in whole)
    else:
        head = int_to_zh(int(whole))
    return head + ("点" + "".join(_ZH_DIGITS[int(d)] for d in frac) if frac else "")


def expand_numbers_zh(text: str) -> str:
    """Replace digits in ``text`` by Chinese numerals (percentages as 百分之…)."""
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    text = re.sub(r"(\d+(?:\.\d+)?)\s?%", lambda m: "百分之" + _zh_number(m.group(1)), text)
    return re.sub(r"\d+(?:\.\d+)?", lambda m: _zh_number(m.group(0)), text)


# ----------------------------------------------------------------------------------------- pipeline
def pinyin_version() -> str:
    """The installed pypinyin's version (part of the cache keys: another version may romanise differently), read
    from its metadata so that no tokenizer imports pypinyin before it meets Chinese text."""
    from importlib.metadata import version

    return version("pypinyin")


def to_pinyin(text: str) -> str:
    """Han characters → TONE3 pinyin with neutral tone 5, syllables concatenated ("你好" → "ni3hao3")."""
    from pypinyin import Style, lazy_pinyin  # imported for Chinese text only (0.7 s of start-up otherwise)

    return "".join(lazy_pinyin(text, style=Style.TONE3, neutral_tone_with_five=True))


def expand_symbols(text: str, lang: str) -> str:
    """``&`` and ``%`` → the language's words (English when unknown); English also expands @ # ° +."""
    text = text.replace("&", f" {_AND.get(lang, 'and')} ")
    if lang != "zh":
        text = text.replace("%", f" {_PERCENT.get(lang, 'percent')} ")
    if lang == "en":
        for sym, word in _EN_SYMBOLS:
            text = text.replace(sym, word)
    return text


def clean_text(text: str, lang: str) -> str:
    """Clean one lyric line for the BPE vocabulary (see module doc for the exact steps)."""
    text = unicodedata.normalize("NFKC", text).translate(_PUNCT_MAP).replace('"', "")
    if lang == "tr":
        text = text.replace("İ", "i").replace("I", "ı")
    text = text.lower()
    if lang == "zh":
        text = expand_numbers_zh(text)
    else:
        text = expand_numbers_en(text)
    if lang == "en":
        for pattern, word in _EN_ABBREVIATIONS:
            text = pattern.sub(word, text)
    text = expand_symbols(text, lang)
    text = re.sub(r"\s+", " ", text).strip()
    if lang == "zh":
        text = to_pinyin(text)
    return text


# ----------------------------------------------------------------------------------------- vocabulary
def lang_tag(lang: str) -> str:
    """The vocabulary token that prefixes text of ``lang`` (``[en]``, ``[zh-cn]`` …)."""
    return "[zh-cn]" if lang == "zh" else f"[{lang}]"


def _fallback_pieces() -> list[str]:
    """Ordinary (non-special) pieces of the fallback vocabulary, in id order."""
    ranges = [(0x61, 0x7A), (0x30, 0x39), (0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E),
              (0xA1, 0xBF), (0xDF, 0xFF), (0x100, 0x17F), (0x430, 0x45F), (0x621, 0x652), (0x900, 0x97F),
              (0x3041, 0x3096), (0x30A1, 0x30FC)]
    chars = [chr(c) for lo, hi in ranges for c in range(lo, hi + 1)]
    chars = [c for c in chars if c not in ("×", "÷") and not (0x100 <= ord(c) <= 0x17F and c != c.lower())]
    letters = "abcdefghijklmnopqrstuvwxyz"
    bigrams = [a + b for a in letters for b in letters]
    tones = [a + d for a in letters for d in "12345"]
    return chars + bigrams + tones


def build_fallback_vocab_json(added_tokens: Sequence[str] = ()) -> str:
    """The built-in vocabulary as ``tokenizers`` JSON: 6681 base ids + ``added_tokens``, deterministic.

    Fixed ids: 0 [STOP], 1 [UNK], 2 [SPACE], 261 [START], the language tags at ``LANG_TAG_IDS``, the
    ``added_tokens`` (not special) at 6681, 6682, … in order. Free ids take, in order: single characters (Latin
    letters incl. the supported languages' diacritics, digits, ASCII/Latin-1 punctuation, Cyrillic, Arabic,
    Devanagari, kana), the 676 a–z bigrams, letter+tone-digit pairs (pinyin), then unreachable
    ``[unused{i}]`` fillers. Any cleaned Latin or pinyin text therefore encodes without [UNK]."""
    specials = {STOP_ID: "[STOP]", UNK_ID: "[UNK]", SPACE_ID: "[SPACE]", START_ID: "[START]"}
    specials.update({i: lang_tag(lang) for lang, i in LANG_TAG_IDS.items()})
    pieces = iter(_fallback_pieces())
    vocab: dict[str, int] = {}
    merges: list[list[str]] = []
    n_unused = 0
    for i in range(BASE_VOCAB_SIZE):
        if i in specials:
            vocab[specials[i]] = i
            continue
        piece = next(pieces, None)
        if piece is None:
            piece = f"[unused{n_unused}]"
            n_unused += 1
        elif len(piece) == 2:
            merges.append([piece[0], piece[1]])
        vocab[piece] = i
    added = [(i, tok, True) for i, tok in sorted(specials.items())]
    added += [(BASE_VOCAB_SIZE + k, tok, False) for k, tok in enumerate(added_tokens)]
    doc = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": special} for i, tok, special in added],
        "normalizer": None, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None, "decoder": None,
        "model": {"type": "BPE", "dropout": None, "unk_token": "[UNK]", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "vocab": vocab, "merges": merges},
    }
    return json.dumps(doc, ensure_ascii=False, sort_keys=True)


# ----------------------------------------------------------------------------------------- tokenizer
class VoiceBpe:
    """A VoiceBpe tokenizer (see module doc). Thread-safe for encoding; holds no mutable state.

    ``option`` / ``expected`` only word the errors: the setting the path came from and what to pass there."""

    def __init__(self, vocab_path: str | Path | None = None, added_tokens: Sequence[str] = (), *,
                 option: str | None = None, expected: str = "a VoiceBpe tokenizers vocab.json"):
        if vocab_path is None:
            text = build_fallback_vocab_json(added_tokens)
            self.source = "builtin"
            self._tok = HFTokenizer.from_str(text)
        else:
            path = Path(vocab_path)
            if not path.is_file():
                from audiotrain.hf_folder import MissingFile

                raise MissingFile(f"lyric vocabulary not found: {path} (expected {expected}, or pass no path to "
                                  "use the built-in fallback vocabulary)")
            try:  # read as data: a JSON document, then tokenizers' own parser
                text = path.read_text(encoding="utf-8")
                json.loads(text)
                self._tok = HFTokenizer.from_str(text)
            except Exception as exc:  # UnicodeDecodeError, JSONDecodeError, tokenizers' own Exception type
                from audiotrain.safe_files import BadFileError, first_line

                give = f"{expected} ({option})" if option else expected
                raise BadFileError(f"The lyric vocabulary {path} is not a tokenizers vocab.json ("
                                   f"{first_line(exc, 120)}); give {give}.") from None
            self.source = str(path)
        #: sha256 of the vocabulary's text (the file's content, or the built-in JSON)
        self.vocab_digest = hashlib.sha256(text.encode("utf-8")).hexdigest()

    @property
    def vocab_size(self) -> int:
        """Number of ids including added tokens (6681 for the bare fallback)."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        """Id of a vocabulary token (``"[START]"`` → 261), None when absent."""
        return self._tok.token_to_id(token)

    def cache_key(self, *extra: object) -> str:
        """Hash of the vocabulary content, this module's algorithm version, the pinyin library version and
        ``extra`` (a caller's own version tag)."""
        return stable_hash(ALGO_VERSION, self.vocab_digest, pinyin_version(), *extra)

    def clean(self, text: str, lang: str) -> str:
        """The cleaned text ``encode`` tokenises (without the language prefix)."""
        return clean_text(text, lang)

    def encode(self, text: str, lang: str) -> list[int]:
        """Ids of ``[lang]`` + cleaned ``text`` with spaces as ``[SPACE]`` (module doc)."""
        txt = lang_tag(lang) + clean_text(text, lang)
        return self._tok.encode(txt.replace(" ", "[SPACE]"), add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        """Concatenated pieces of ``ids`` (special tokens kept, [SPACE] shown as a space) — for debugging."""
        return "".join(self._tok.id_to_token(i) or "" for i in ids).replace("[SPACE]", " ")
