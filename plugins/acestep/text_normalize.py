"""Multilingual lyric cleaning for the ACE-Step lyric tokenizer (VoiceBpeTokenizer's text front end).

``clean_text(text, lang)`` contract (``lang`` is a supported code, see ``lang_detect.SUPPORTED_LANGS``):
1. Unicode NFKC (full-width forms → ASCII), typographic quotes/dashes/CJK punctuation → ASCII, ``"`` and the
   other double quotes dropped.
2. Lowercase (Turkish: ``I`` → ``ı``, ``İ`` → ``i`` first).
3. Numbers. ``zh``: ``50%`` → 百分之五十, integers read as Chinese numerals (二千零二十四), decimals with 点,
   digit-by-digit for leading zeros or > 16 digits. Every other language: English words, num2words style
   ("one hundred and twenty-three", "three point one four", "1st" → "first", "$5" → "five dollars",
   "1,000" → "one thousand"). Non-English Latin languages therefore read digits in English — a known, documented
   simplification (the original used num2words per language).
4. English abbreviations (``mr.`` → ``mister`` …) and symbols (``&`` → and, ``%`` → percent, ``@`` → at …;
   ``&``/``%`` get the language's own word where known).
5. Whitespace collapsed to single spaces, stripped.
6. ``zh`` only: pypinyin ``Style.TONE3`` with ``neutral_tone_with_five=True``, syllables joined WITHOUT spaces
   ("你好" → "ni3hao3", as the spec records); non-Han text passes through.
``ko``/``ja`` are only lowercased: the original's romanisers (hangul-romanize, cutlet + MeCab dictionary) are not
available offline, so Hangul/Kana stay as they are (they may map to [UNK] in the lyric vocabulary).
"""
from __future__ import annotations

import re
import unicodedata

from pypinyin import Style, lazy_pinyin

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
def to_pinyin(text: str) -> str:
    """Han characters → TONE3 pinyin with neutral tone 5, syllables concatenated ("你好" → "ni3hao3")."""
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
