"""Light, script-based language detection for lyrics (replaces ACE-Step's LangSegment).

Contract
- ``char_lang(ch)`` → a language code for a letter, ``"latin"`` for any Latin letter, ``None`` for a neutral
  character (space, digit, punctuation, combining mark), or a raw code of an unsupported script (``"th"``,
  ``"el"``, ``"he"``, ``"und"`` …).
- ``segment(text)`` → list of ``(run_text, lang)`` covering ``text`` exactly (concatenating the runs gives
  ``text`` back); ``lang`` is always one of ``SUPPORTED_LANGS``. Neutral characters join the run they follow
  (leading ones join the first run). Adjacent runs with the same language are merged.
- ``most_common_lang(text)`` → the supported language with the most letters in ``text`` (``"en"`` when there
  are none).
- Unsupported scripts/codes map to ``"en"`` and emit an ``UnsupportedLanguageWarning`` — never an exception
  (the original raised ``ValueError("Unsupported language")`` and dropped the song).

Rules (deliberately simple)
- Han → ``zh``, except that Han counts as ``ja`` when the analysed text also contains kana.
- Hiragana/Katakana → ``ja``; Hangul → ``ko``; Cyrillic → ``ru``; Arabic → ``ar``; Devanagari → ``hi``.
- Latin → ``en`` unless diacritics give a strong hint: every hinting character votes ``1/k`` for each of its
  ``k`` candidate languages (e.g. ``ñ`` → es, ``ß`` → de, ``ł`` → pl, ``ő`` → hu, ``é`` → fr/es/pt/it/cs/hu);
  the best language wins if its score is ≥ 1 and ≥ 0.4 per 100 Latin letters (ties: ``_LATIN_PRIORITY``).
  So "café" stays English while "niño", "größe" or "łódź" do not. ``it`` and ``nl`` are rarely detected.
"""
from __future__ import annotations

import unicodedata
import warnings
from collections import Counter

#: ACE-Step's lyric languages (SUPPORT_LANGUAGES of the dataset); ``zh`` is written ``[zh-cn]`` in the vocab.
SUPPORTED_LANGS = ("en", "de", "fr", "es", "it", "pt", "pl", "tr", "ru", "cs", "nl", "ar", "zh", "ja", "hu",
                   "ko", "hi")

_ALIASES = {"zh-cn": "zh", "zh-tw": "zh", "cmn": "zh", "spa": "es", "jp": "ja", "kr": "ko", "iw": "he"}

_LATIN_HINTS: dict[str, tuple[str, ...]] = {
    "ß": ("de",), "ä": ("de",), "ö": ("de", "tr", "hu"), "ü": ("de", "tr", "hu"),
    "ñ": ("es",), "¿": ("es",), "¡": ("es",),
    "ã": ("pt",), "õ": ("pt",), "ç": ("fr", "pt", "tr"),
    "œ": ("fr",), "î": ("fr",), "û": ("fr",), "è": ("fr", "it"), "ù": ("fr", "it"), "ê": ("fr", "pt"),
    "â": ("fr", "pt"), "ô": ("fr", "pt"), "ë": ("fr", "nl"), "ï": ("fr", "nl"), "à": ("fr", "it", "pt"),
    "ì": ("it",), "ò": ("it",),
    "á": ("es", "pt", "cs", "hu"), "í": ("es", "pt", "cs", "hu"), "ú": ("es", "pt", "cs", "hu"),
    "ó": ("es", "pt", "pl", "cs", "hu"), "é": ("fr", "es", "pt", "it", "cs", "hu"),
    "ł": ("pl",), "ą": ("pl",), "ę": ("pl",), "ś": ("pl",), "ź": ("pl",), "ż": ("pl",), "ć": ("pl",),
    "ń": ("pl",),
    "ř": ("cs",), "ě": ("cs",), "ů": ("cs",), "č": ("cs",), "š": ("cs",), "ž": ("cs",), "ď": ("cs",),
    "ť": ("cs",), "ň": ("cs",), "ý": ("cs",),
    "ğ": ("tr",), "ş": ("tr",), "ı": ("tr",),
    "ő": ("hu",), "ű": ("hu",),
}
_LATIN_PRIORITY = ("es", "de", "fr", "pt", "pl", "cs", "tr", "hu", "it", "nl")


class UnsupportedLanguageWarning(UserWarning):
    """A script or language code ACE-Step's lyric vocabulary has no tag for; it is treated as English."""


def canonical_lang(code: str) -> str:
    """Map a language code to one of ``SUPPORTED_LANGS`` (region stripped: ``zh-cn`` → ``zh``, ``pt-BR`` →
    ``pt``; ``spa`` → ``es``). Unknown codes → ``"en"`` with an ``UnsupportedLanguageWarning``."""
    c = (code or "en").strip().lower().replace("_", "-")
    c = _ALIASES.get(c, c)
    c = _ALIASES.get(c.split("-")[0], c.split("-")[0])
    if c in SUPPORTED_LANGS:
        return c
    warnings.warn(f"lyrics language {code!r} is not supported by the ACE-Step lyric vocabulary; using 'en'",
                  UnsupportedLanguageWarning, stacklevel=2)
    return "en"


def char_lang(ch: str) -> str | None:
    """Script-level language of one character (see module doc); ``None`` for neutral characters."""
    if not unicodedata.category(ch).startswith("L"):
        return None
    o = ord(ch)
    if o < 0x0250 or 0x1E00 <= o <= 0x1EFF or 0xFF21 <= o <= 0xFF5A:
        return "latin"
    if 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x3134F:
        return "zh"
    if 0x3040 <= o <= 0x30FF or 0x31F0 <= o <= 0x31FF or 0xFF66 <= o <= 0xFF9F:
        return "ja"
    if 0xAC00 <= o <= 0xD7AF or 0x1100 <= o <= 0x11FF or 0x3130 <= o <= 0x318F:
        return "ko"
    if 0x0400 <= o <= 0x052F:
        return "ru"
    if 0x0600 <= o <= 0x06FF or 0x0750 <= o <= 0x077F or 0xFB50 <= o <= 0xFDFF or 0xFE70 <= o <= 0xFEFF:
        return "ar"
    if 0x0900 <= o <= 0x097F:
        return "hi"
    if 0x0E00 <= o <= 0x0E7F:
        return "th"
    if 0x0370 <= o <= 0x03FF:
        return "el"
    if 0x0590 <= o <= 0x05FF:
        return "he"
    return "und"


def latin_lang(text: str) -> str:
    """Language of Latin-script ``text`` by diacritic votes (module doc); ``"en"`` without a strong hint."""
    low = text.lower()
    scores: dict[str, float] = {}
    for ch in low:
        langs = _LATIN_HINTS.get(ch)
        if langs:
            for lang in langs:
                scores[lang] = scores.get(lang, 0.0) + 1.0 / len(langs)
    if not scores:
        return "en"
    best = max(_LATIN_PRIORITY, key=lambda lang: (scores.get(lang, 0.0), -_LATIN_PRIORITY.index(lang)))
    letters = sum(1 for ch in low if char_lang(ch) == "latin")
    score = scores.get(best, 0.0)
    return best if score >= 1.0 and score >= 0.004 * letters else "en"


def _raw_runs(text: str) -> list[tuple[str, str]]:
    """Split ``text`` into runs of one script-level code (``"latin"``/raw codes kept), covering ``text``."""
    has_kana = any(char_lang(ch) == "ja" for ch in text)
    runs: list[list[str]] = []  # [code, chars]
    pending = ""  # neutral characters before the first letter
    for ch in text:
        code = char_lang(ch)
        if code == "zh" and has_kana:
            code = "ja"
        if code is None:
            if runs:
                runs[-1][1] += ch
            else:
                pending += ch
            continue
        if runs and runs[-1][0] == code:
            runs[-1][1] += ch
        else:
            runs.append([code, pending + ch])
            pending = ""
    if not runs:
        return [(pending, "latin")] if pending else []
    return [(chars, code) for code, chars in runs]


def _resolve(code: str, chunk: str) -> str:
    """Turn a script-level code into a supported language (Latin via diacritics, unknown → en + warning)."""
    if code == "latin":
        return latin_lang(chunk)
    return canonical_lang(code)


def segment(text: str) -> list[tuple[str, str]]:
    """Split ``text`` into ``(run_text, lang)`` runs of one supported language each (see module doc)."""
    out: list[tuple[str, str]] = []
    for chunk, code in _raw_runs(text):
        lang = _resolve(code, chunk)
        if out and out[-1][1] == lang:
            out[-1] = (out[-1][0] + chunk, lang)
        else:
            out.append((chunk, lang))
    return out


def most_common_lang(text: str) -> str:
    """The supported language with the most letters in ``text``; ``"en"`` if it has no letters.

    Letters are first counted per script (all Latin letters together), then a winning Latin script is
    resolved over all Latin text at once, so a Spanish song is ``es`` even if most lines lack accents."""
    counts: Counter[str] = Counter()
    latin_text: list[str] = []
    for chunk, code in _raw_runs(text):
        n = sum(1 for ch in chunk if char_lang(ch) is not None)
        counts[code] += n
        if code == "latin":
            latin_text.append(chunk)
    if not counts or max(counts.values()) == 0:
        return "en"
    top = counts.most_common(1)[0][0]
    return latin_lang(" ".join(latin_text)) if top == "latin" else _resolve(top, "")
