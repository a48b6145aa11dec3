"""TorToiSe's text cleaners (spec §3.3): ``basic_cleaners`` and ``english_cleaners``.

- ``basic_cleaners(text)``: lowercase, every whitespace run → one space (not stripped: AIVC's whisper lines start
  with a space and keep it). What mrq's DL-Art-School tokenizer uses unless the tokenizer.json says
  ``model.language == "en"`` — so for TorToiSe's own tokenizer.json during training.
- ``english_cleaners(text)``: TorToiSe's inference cleaning: to ASCII, lowercase, numbers in words, abbreviations,
  whitespace collapsed, ``"`` dropped.

To ASCII: ``unidecode`` when installed; otherwise (it is not in this environment) NFKD with the combining marks
dropped, a few characters mapped as unidecode maps them (quotes, dashes, ellipsis, ``£`` → "PS", ``€`` → "EUR")
and other non-ASCII characters removed. (So, as in TorToiSe, the ``£`` rule below never fires inside english_cleaners:
the transliteration runs first; "£3" becomes "psthree".)

Numbers, in TorToiSe's order (its ``normalize_numbers``, written against inflect's ``number_to_words`` with
``andword=''``): commas inside numbers removed; ``£N`` → "N pounds"; ``$D.C`` → "D dollars, C cents" (singular
for 1; "zero dollars" for $0; more than one point → "<text> dollars"); a decimal ``A.B`` → "A point B"; an
ordinal ``Nst/nd/rd/th`` → words ("twenty-first"); a cardinal → words: between 1000 and 3000 (exclusive) as a
year — 2000 "two thousand", 2001–2009 "two thousand N", whole hundreds "N hundred" (1900 → "nineteen hundred"),
else pairs of digits with zero read "oh" (1999 → "nineteen ninety-nine", 1905 → "nineteen oh five"); other
numbers as inflect reads them without "and", groups after a thousand separated by ", " ("five thousand, two
hundred thirty-four").
"""
from __future__ import annotations

import re
import unicodedata

try:  # optional: TorToiSe uses it; absent here, so the fallback below is what the tests exercise
    from unidecode import unidecode as _unidecode
except ImportError:  # pragma: no cover - depends on the environment
    _unidecode = None

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
         "seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ("", "thousand", "million", "billion", "trillion", "quadrillion", "quintillion")
_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
            "nine": "ninth", "twelve": "twelfth"}
_ABBREVIATIONS = [(re.compile(rf"\b{a}\.", re.IGNORECASE), w) for a, w in (
    ("mrs", "misess"), ("mr", "mister"), ("dr", "doctor"), ("st", "saint"), ("co", "company"),
    ("jr", "junior"), ("maj", "major"), ("gen", "general"), ("drs", "doctors"), ("rev", "reverend"),
    ("lt", "lieutenant"), ("hon", "honorable"), ("sgt", "sergeant"), ("capt", "captain"), ("esq", "esquire"),
    ("ltd", "limited"), ("col", "colonel"), ("ft", "fort"))]
_ASCII = str.maketrans({"“": '"', "”": '"', "„": '"', "«": '"', "»": '"', "‘": "'", "’": "'", "‚": "'",
                        "—": "--", "–": "-", "‐": "-", "…": "...", "\u00a0": " ", "ß": "ss", "æ": "ae",
                        "Æ": "AE", "ø": "o", "Ø": "O", "œ": "oe", "Œ": "OE", "ł": "l", "Ł": "L", "đ": "d",
                        "£": "PS", "€": "EUR"})

_COMMA_NUMBER = re.compile(r"([0-9][0-9,]+[0-9])")
_POUNDS = re.compile(r"£([0-9,]*[0-9]+)")
_DOLLARS = re.compile(r"\$([0-9.,]*[0-9]+)")
_DECIMAL = re.compile(r"([0-9]+\.[0-9]+)")
_ORDINAL_RE = re.compile(r"[0-9]+(st|nd|rd|th)")
_NUMBER = re.compile(r"[0-9]+")


def to_ascii(text: str) -> str:
    """``unidecode`` when installed, else the fallback of the module doc."""
    if _unidecode is not None:
        return _unidecode(text)
    text = unicodedata.normalize("NFKD", text.translate(_ASCII))
    return "".join(ch for ch in text if ord(ch) < 128)


def collapse_whitespace(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def basic_cleaners(text: str) -> str:
    """Lowercase and collapse whitespace (no strip)."""
    return collapse_whitespace(text.lower())


def _below_thousand(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    parts = [f"{_ONES[hundreds]} hundred"] if hundreds else []
    if rest:
        parts.append(_ONES[rest] if rest < 20 else _TENS[rest // 10] + (f"-{_ONES[rest % 10]}" if rest % 10 else ""))
    return " ".join(parts)


def cardinal(n: int) -> str:
    """inflect's ``number_to_words(n, andword='')``: "one hundred twenty-three", "two thousand, five"."""
    if n == 0:
        return "zero"
    if n >= 1000 ** len(_SCALES):
        return " ".join(_ONES[int(d)] for d in str(n))
    groups, i = [], 0
    while n:
        n, g = divmod(n, 1000)
        if g:
            groups.append(_below_thousand(g) + (f" {_SCALES[i]}" if i else ""))
        i += 1
    return ", ".join(reversed(groups))


def ordinal(n: int) -> str:
    """Ordinal words of ``n`` ("first", "twenty-second", "one hundredth")."""
    words = cardinal(n)
    head, sep, last = words.rpartition(" ")
    pre, hyphen, tail = last.rpartition("-")
    tail = _ORDINAL.get(tail) or (tail[:-1] + "ieth" if tail.endswith("y") else tail + "th")
    return head + sep + pre + hyphen + tail


def _pairs(n: int) -> str:
    """A year read in pairs of digits, zero as "oh" ("nineteen oh five")."""
    hi, lo = divmod(n, 100)
    low = f"oh {_ONES[lo]}" if lo < 10 else _below_thousand(lo)
    return f"{_below_thousand(hi)} {low}"


def _number(m: re.Match) -> str:
    n = int(m.group(0))
    if 1000 < n < 3000:
        if n == 2000:
            return "two thousand"
        if 2000 < n < 2010:
            return "two thousand " + cardinal(n % 100)
        if n % 100 == 0:
            return cardinal(n // 100) + " hundred"
        return _pairs(n)
    return cardinal(n)


def _dollars(m: re.Match) -> str:
    match = m.group(1)
    parts = match.split(".")
    if len(parts) > 2:
        return match + " dollars"
    dollars = int(parts[0]) if parts[0] else 0
    cents = int(parts[1]) if len(parts) > 1 and parts[1] else 0
    d_unit, c_unit = ("dollar" if dollars == 1 else "dollars"), ("cent" if cents == 1 else "cents")
    if dollars and cents:
        return f"{dollars} {d_unit}, {cents} {c_unit}"
    if dollars:
        return f"{dollars} {d_unit}"
    if cents:
        return f"{cents} {c_unit}"
    return "zero dollars"


def expand_numbers(text: str) -> str:
    """Numbers, currency and ordinals in words (module doc)."""
    text = _COMMA_NUMBER.sub(lambda m: m.group(1).replace(",", ""), text)
    text = _POUNDS.sub(r"\1 pounds", text)
    text = _DOLLARS.sub(_dollars, text)
    text = _DECIMAL.sub(lambda m: m.group(1).replace(".", " point "), text)
    text = _ORDINAL_RE.sub(lambda m: ordinal(int(m.group(0)[:-2])), text)
    return _NUMBER.sub(_number, text)


def expand_abbreviations(text: str) -> str:
    for pattern, word in _ABBREVIATIONS:
        text = pattern.sub(word, text)
    return text


def english_cleaners(text: str) -> str:
    """ASCII, lowercase, numbers, abbreviations, whitespace, no ``"`` (module doc)."""
    text = to_ascii(text).lower()
    text = expand_abbreviations(expand_numbers(text))
    return collapse_whitespace(text).replace('"', "")
