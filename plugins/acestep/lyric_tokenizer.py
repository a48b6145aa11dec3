"""ACE-Step v1 lyric tokenizer: VoiceBpeTokenizer semantics plus the dataset's ``tokenize_lyrics`` logic.

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

import hashlib
import json
import re
from pathlib import Path

import pypinyin
from tokenizers import Tokenizer as HFTokenizer

from audiotrain.encoders.base import stable_hash

from .lang_detect import canonical_lang, most_common_lang
from .text_normalize import clean_text

#: bump when any output-changing part of cleaning/tokenisation changes (part of ``cache_key``)
ALGO_VERSION = "acestep-lyrics-v1"

STOP_ID, UNK_ID, SPACE_ID, START_ID = 0, 1, 2, 261
MAX_LYRIC_TOKENS = 4096
BASE_VOCAB_SIZE = 6681
VOCAB_SIZE = 6693

#: language → id of its ``[lang]`` tag in ACE-Step's vocab.json (zh is the token ``[zh-cn]``)
LANG_TAG_IDS = {"en": 259, "de": 260, "fr": 262, "es": 284, "it": 285, "pt": 286, "pl": 294, "tr": 295,
                "ru": 267, "cs": 293, "nl": 297, "ar": 5022, "zh": 5023, "ja": 5412, "hu": 5753, "ko": 6152,
                "hi": 6680}
#: added structure tokens, ids 6681..6692 in this order
STRUCTURE_TAGS = ("[start]", "[intro]", "[verse]", "[chorus]", "[bridge]", "[outro]", "[end]", "[inst]",
                  "[solo]", "[hook]", "[pre-chorus]", "[break]")

_PROMPT_PLACEHOLDER = re.compile(r"write a .* song that genre is")
_STRUCTURE_LINE = re.compile(r"^\[.*?\]")


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


def build_fallback_vocab_json() -> str:
    """The built-in vocabulary as ``tokenizers`` JSON: 6681 base ids + 12 added = 6693, deterministic.

    Fixed ids: 0 [STOP], 1 [UNK], 2 [SPACE], 261 [START], the language tags at ``LANG_TAG_IDS``, the
    structure tags at 6681..6692. Free ids take, in order: single characters (Latin letters incl. the
    supported languages' diacritics, digits, ASCII/Latin-1 punctuation, Cyrillic, Arabic, Devanagari, kana),
    the 676 a–z bigrams, letter+tone-digit pairs (pinyin), then unreachable ``[unused{i}]`` fillers.
    Any cleaned Latin or pinyin text therefore encodes without [UNK]."""
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
    added += [(BASE_VOCAB_SIZE + k, tok, False) for k, tok in enumerate(STRUCTURE_TAGS)]
    doc = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": special} for i, tok, special in added],
        "normalizer": None, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None, "decoder": None,
        "model": {"type": "BPE", "dropout": None, "unk_token": "[UNK]", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "vocab": vocab, "merges": merges},
    }
    return json.dumps(doc, ensure_ascii=False, sort_keys=True)


class LyricTokenizer:
    """ACE-Step lyric BPE tokenizer (see module doc). Thread-safe for encoding; holds no mutable state."""

    def __init__(self, vocab_path: str | Path | None = None):
        if vocab_path is None:
            text = build_fallback_vocab_json()
            self.source = "builtin"
            self._tok = HFTokenizer.from_str(text)
        else:
            path = Path(vocab_path)
            if not path.is_file():
                from audiotrain.hf_folder import MissingFile

                raise MissingFile(
                    f"lyric vocabulary not found: {path} (expected ACE-Step's acestep/models/lyrics_utils/"
                    "vocab.json, or pass no path to use the built-in fallback vocabulary)")
            try:  # read as data: a JSON document, then tokenizers' own parser
                text = path.read_text(encoding="utf-8")
                json.loads(text)
                self._tok = HFTokenizer.from_str(text)
            except Exception as exc:  # UnicodeDecodeError, JSONDecodeError, tokenizers' own Exception type
                from audiotrain.safe_files import BadFileError, first_line

                raise BadFileError(f"The lyric vocabulary {path} is not a tokenizers vocab.json ("
                                   f"{first_line(exc, 120)}); give "
                                   f"ACE-Step's acestep/models/lyrics_utils/vocab.json (model.lyric_vocab_path).") from None
            self.source = str(path)
        self._vocab_digest = hashlib.sha256(text.encode("utf-8")).hexdigest()

    @property
    def vocab_size(self) -> int:
        """Number of ids including added tokens (6693 for ACE-Step's file and the fallback)."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    def cache_key(self) -> str:
        """Hash of the vocabulary content, the algorithm version and the pinyin library version."""
        return stable_hash(ALGO_VERSION, self._vocab_digest, pypinyin.__version__)

    def clean(self, text: str, lang: str) -> str:
        """The cleaned text ``encode`` tokenises (without the language prefix)."""
        return clean_text(text, canonical_lang(lang))

    def encode(self, text: str, lang: str) -> list[int]:
        """Ids of ``[lang]`` + cleaned ``text`` with spaces as ``[SPACE]`` (module doc)."""
        lang = canonical_lang(lang)
        txt = lang_tag(lang) + clean_text(text, lang)
        return self._tok.encode(txt.replace(" ", "[SPACE]"), add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        """Concatenated pieces of ``ids`` (special tokens kept, [SPACE] shown as a space) — for debugging."""
        return "".join(self._tok.id_to_token(i) or "" for i in ids).replace("[SPACE]", " ")

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
