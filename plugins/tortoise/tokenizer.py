"""TorToiSe's BPE text tokenizer (``tokenizer.json``, spec §3.3), the way mrq's DL-Art-School encodes training text.

``VoiceTokenizer(path=None, *, cleaner=None, option=None)``:

- With ``path``: a HF ``tokenizers`` JSON (BPE, Whitespace pre-tokenizer, [STOP]=0, [UNK]=1, [SPACE]=2), read as
  text and parsed as JSON, then by ``tokenizers`` (never as code); a bad file is one sentence.
- Without: :data:`BUILTIN_VOCAB`, a built-in vocabulary in the same layout for tiny models and tests: the 3
  specials, ``!'(),-./:;?`` at 3–13, ``a``–``z`` at 14–39 (TorToiSe's ids for them) and a few merges from 40 on.
- Cleaner (mrq's DLAS rule): ``english_cleaners`` when the json's ``model.language`` is ``"en"``, else
  ``basic_cleaners`` — TorToiSe's own tokenizer.json has no language, so training text is only lowercased and its
  whitespace collapsed. ``cleaner="english"|"basic"`` overrides the rule (TorToiSe's inference uses english).
- ``encode(text)``: clean, every space → ``[SPACE]``, BPE ids (no start/stop: UnifiedVoice adds those).
  ``decode(ids)``: pieces joined, ``[SPACE]`` → space, ``[STOP]`` / ``[UNK]`` removed.
- ``unknown_characters(text)``: the characters of the cleaned text that encode to [STOP] or [UNK] (what DLAS's
  dataset asserts against: a line with either id fails there), in order of appearance, each once.
- ``cache_key(*extra)``: names the vocabulary content and the cleaner, for feature caches.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from tokenizers import Tokenizer

from audiotrain.encoders.base import stable_hash

from .cleaners import basic_cleaners, english_cleaners

STOP_ID, UNK_ID, SPACE_ID = 0, 1, 2
SPECIALS = ("[STOP]", "[UNK]", "[SPACE]")
PUNCTUATION = "!'(),-./:;?"
LETTERS = "abcdefghijklmnopqrstuvwxyz"
#: merges of the built-in vocabulary, in rank order (each result gets the next id from 40 on)
BUILTIN_MERGES = (("t", "h"), ("h", "e"), ("th", "e"), ("i", "n"), ("e", "r"), ("a", "n"), ("o", "u"),
                  ("in", "g"))
ALGO_VERSION = "tortoise-bpe-v1"
EXPECTED = "a TorToiSe tokenizer.json (HF tokenizers BPE, e.g. tortoise/data/tokenizer.json)"
CLEANERS: dict[str, Callable[[str], str]] = {"english": english_cleaners, "basic": basic_cleaners}


def builtin_vocab() -> dict[str, Any]:
    """The built-in vocabulary as a ``tokenizer.json`` document (module doc)."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in PUNCTUATION + LETTERS:
        vocab[ch] = len(vocab)
    for a, b in BUILTIN_MERGES:
        vocab[a + b] = len(vocab)
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, tok in enumerate(SPECIALS)],
        "normalizer": None, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None, "decoder": None,
        "model": {"type": "BPE", "dropout": None, "unk_token": "[UNK]", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "vocab": vocab,
                  "merges": [f"{a} {b}" for a, b in BUILTIN_MERGES]},
    }


BUILTIN_VOCAB: dict[str, Any] = builtin_vocab()


class VoiceTokenizer:
    """TorToiSe's text tokenizer (module doc)."""

    def __init__(self, path: str | Path | None = None, *, cleaner: str | None = None,
                 option: str | None = None) -> None:
        if path is None:
            text = json.dumps(BUILTIN_VOCAB, sort_keys=True)
            doc: Any = BUILTIN_VOCAB
            self.source = "builtin"
        else:
            text, doc = _read(Path(str(path)).expanduser(), option)
            self.source = str(path)
        try:
            self._tok = Tokenizer.from_str(text)
        except Exception as exc:  # tokenizers raises its own Exception type for a bad document
            from audiotrain.safe_files import BadFileError, first_line, where

            raise BadFileError(f"{where(option, Path(str(path)))} is not a tokenizers file ({first_line(exc, 120)}); "
                               f"pass {EXPECTED}.") from None
        model = doc.get("model") if isinstance(doc, dict) else None
        self.language = model.get("language") if isinstance(model, dict) else None
        if cleaner is None:
            cleaner = "english" if self.language == "en" else "basic"
        if cleaner not in CLEANERS:
            raise ValueError(f"cleaner={cleaner!r} is unknown; use one of {sorted(CLEANERS)}")
        self.cleaner = cleaner
        self.vocab_digest = hashlib.sha256(text.encode("utf-8")).hexdigest()

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def clean(self, text: str) -> str:
        """``text`` after the tokenizer's cleaner."""
        return CLEANERS[self.cleaner](text)

    def _encoding(self, text: str):
        return self._tok.encode(self.clean(text).replace(" ", "[SPACE]"), add_special_tokens=False)

    def encode(self, text: str) -> list[int]:
        """BPE ids of the cleaned ``text`` with spaces as [SPACE]."""
        return self._encoding(text).ids

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids``: pieces joined, [SPACE] as a space, [STOP] and [UNK] left out."""
        pieces = (self._tok.id_to_token(int(i)) or "" for i in ids)
        return "".join(pieces).replace("[SPACE]", " ").replace("[STOP]", "").replace("[UNK]", "")

    def unknown_characters(self, text: str) -> list[str]:
        """The characters (as the cleaner left them) that encode to [STOP] or [UNK], first appearance order."""
        enc = self._encoding(text)
        spaced = self.clean(text).replace(" ", "[SPACE]")
        found: list[str] = []
        for i, (start, end) in zip(enc.ids, enc.offsets):
            if i in (STOP_ID, UNK_ID):
                piece = spaced[start:end]
                for ch in ([piece] if piece == "[STOP]" else piece):
                    if ch not in found:
                        found.append(ch)
        return found

    def cache_key(self, *extra: object) -> str:
        """Hash of the vocabulary content, the cleaner, this module's version and ``extra``."""
        return stable_hash(ALGO_VERSION, self.vocab_digest, self.cleaner, *extra)


def _read(path: Path, option: str | None) -> tuple[str, Any]:
    from audiotrain.safe_files import BadFileError, check_file, first_line, where

    check_file(path, option=option, expected=EXPECTED)
    try:
        text = path.read_text(encoding="utf-8")
        return text, json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadFileError(f"{where(option, path)} is not a tokenizers JSON file ({first_line(exc, 120)}); "
                           f"pass {EXPECTED}.") from None
