"""Text → IPA phonemes (espeak-ng through the ``phonemizer`` package) → phoneme ids.

VALL-E conditions on phonemes, not letters. Text goes through phonemizer's espeak backend with
``preserve_punctuation=True``, ``with_stress=True`` and ``strip=True`` (an IPA string such as
``həlˈoʊ wˈɜːld.``); the :class:`Symmap` turns that string into ids wrapped as ``[<bos>, …, </eos>]``.

The built-in symmap is generated from a fixed IPA inventory (:data:`IPA_INVENTORY`) in a fixed order,
so ids never depend on the dataset. A symmap stored with a checkpoint (a ``{symbol: id}`` dict, whose
symbols may be several characters long) can replace it; encoding is a greedy longest match either way.
The original itself encodes with a BPE ``tokenizer.json``; :class:`PhonemeBPE` reads that file
(``model.tokenizer_path``) and gives exactly its ids, which a greedy match can miss.

espeak-ng is a system package, not a Python one; when it is missing we say how to install it
instead of showing a traceback. Language ids (``en`` 0, ``ja`` 1, ``de`` 2, ``fr`` 3, ``zh`` 4,
``ko`` 5) are those of the VALL-E checkpoints.
"""
from __future__ import annotations

import json
import logging
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

from audiotrain.errors import UserError
from audiotrain.encoders.base import stable_hash

UNK, BOS, EOS, MASK = "<unk>", "<bos>", "</eos>", "<mask>"
SPECIALS = (UNK, BOS, EOS, MASK)  # ids 0, 1, 2, 3

#: Everything after the four specials, in id order (4, 5, …). Append only: reordering changes ids.
IPA_INVENTORY: tuple[str, ...] = (
    " ",
    # punctuation phonemizer preserves, plus the hyphen/apostrophe espeak itself emits
    *";:,.!?¡¿—…\"«»“”(){}[]-'",
    # stress, length and tone letters (zh tone digits are rewritten to ˉ ˊ ˇ ˋ _)
    *"ˈˌːˑ", *"ˉˊˇˋ_", "˥", "˦", "˧", "˨", "˩",
    # Latin letters used as IPA symbols
    *"abcdefghijklmnopqrstuvwxyz",
    # vowels
    *"æɐɑɒɔəɘɚɛɜɝɞɤɨɪɵøœɶʉʊʌʏɯᵻᵿ",
    # consonants
    *"βɓçɕɗɖðʤɟʄɡɠɢʛɦɧħɥʜʝɭɬɫɮʟɱɰŋɳɲɴɸθɹɺɾɻʀʁɽʂʃʈʧʋⱱɣʍχʎʑʐʒʔʡʕʢǀǁǂǃʘ",
    # modifier letters
    *"ʰʱʲʷˠˤⁿˡᵝᵊʼ˞",
    # combining diacritics: nasal, syllabic, non-syllabic, lowered, raised, voiceless, dental, centralised,
    # tie bars, acute, grave, macron, caron, ring above, advanced, retracted, breathy
    *"\u0303\u0329\u032f\u031e\u031d\u0325\u032a\u0308\u0361",
    *"\u035c\u0301\u0300\u0304\u030c\u030a\u031f\u0320\u0324",
    # precomposed vowels espeak emits for some languages
    *"äëïöüÿéèêàâãõĩũẽỹòóôùúìíåáǎěǐǒǔ",
)

#: VALL-E's language ids (its ``lang`` embedding); the model needs ``langs`` ≥ 6 to use all of them.
LANGUAGE_IDS = {"en": 0, "ja": 1, "de": 2, "fr": 3, "zh": 4, "ko": 5}

_COERCE = {"en": "en-us", "fr": "fr-fr"}
_TONES = str.maketrans({"1": "ˉ", "2": "ˊ", "3": "ˇ", "4": "ˋ", "5": "_"})
_PUNCT_OPTIONS = {"preserve_punctuation": True, "with_stress": True, "strip": True,
                  "language_switch": "remove-flags"}

TOKENIZER_EXPECTED = ("the original vall-e's phoneme tokenizer.json (a HF `tokenizers` BPE file, shipped beside its "
                      "config), or leave model.tokenizer_path unset for the built-in symmap")

ESPEAK_MISSING = (
    "espeak-ng was not found, and VALL-E needs it to turn transcripts into phonemes: install it with "
    "`apt-get install espeak-ng` (Debian/Ubuntu), `brew install espeak-ng` (macOS) or the .msi installer "
    "from github.com/espeak-ng/espeak-ng/releases (Windows), or, if it is installed somewhere unusual, "
    "set PHONEMIZER_ESPEAK_LIBRARY to its libespeak-ng library file."
)


class UnknownPhonemeWarning(UserWarning):
    """Some phoneme symbols are not in the symmap and were encoded as ``<unk>``."""


def coerce_language(code: str) -> str:
    """A user's language code → an espeak-ng voice: ``en``→``en-us``, ``fr``→``fr-fr``, ``zh*``→pinyin."""
    c = str(code or "").strip().lower().replace("_", "-")
    if not c:
        raise UserError("The phoneme language is empty: give an espeak-ng language code such as en-us, fr-fr or de.")
    if c.startswith("zh") or c == "cmn":
        return "cmn-latn-pinyin"
    return _COERCE.get(c, c)


def language_id(code: str) -> int:
    """VALL-E's id for a language (``en-us`` → 0, ``cmn-latn-pinyin`` → 4)."""
    base = coerce_language(code).split("-")[0]
    base = "zh" if base == "cmn" else base
    if base not in LANGUAGE_IDS:
        raise UserError(f"Language {code!r} has no VALL-E language id: the checkpoints know "
                        f"{', '.join(f'{k} ({v})' for k, v in LANGUAGE_IDS.items())}.")
    return LANGUAGE_IDS[base]


def espeak_available() -> bool:
    """Whether phonemizer can load the espeak-ng library (the lookup the tests stub out)."""
    from phonemizer.backend import EspeakBackend

    return bool(EspeakBackend.is_available())


def _phonemizer_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("phonemizer")
    except PackageNotFoundError:
        return "missing"


class Phonemizer:
    """espeak-ng IPA with VALL-E's options; one backend per language, built on first use."""

    def __init__(self, language: str = "en-us"):
        self.language = coerce_language(language)
        self._backends: dict[str, Any] = {}
        self._log = logging.getLogger("audiotrain_valle.phonemizer")
        self._log.setLevel(logging.ERROR)  # phonemizer's "words count mismatch" chatter

    def cache_key(self) -> str:
        """Changes with the default language, the options and the phonemizer version (not with espeak's)."""
        return stable_hash("phonemizer", _phonemizer_version(), self.language, _PUNCT_OPTIONS)

    def backend(self, language: str | None = None) -> Any:
        """The espeak backend for ``language`` (default: this phonemizer's), or a UserError saying why not."""
        lang = coerce_language(language) if language else self.language
        if lang in self._backends:
            return self._backends[lang]
        try:
            from phonemizer.backend import EspeakBackend
        except ImportError:
            raise UserError("The `phonemizer` package is missing: pip install phonemizer==3.4.0") from None
        if not espeak_available():
            raise UserError(ESPEAK_MISSING)
        if not EspeakBackend.is_supported_language(lang):
            raise UserError(f"Language {lang!r} is not an espeak-ng voice: use a code from "
                            "`espeak-ng --voices` (e.g. en-us, en-gb, fr-fr, de, es, ja, ko, cmn-latn-pinyin).")
        self._backends[lang] = EspeakBackend(
            lang, preserve_punctuation=True, with_stress=True,
            language_switch=_PUNCT_OPTIONS["language_switch"], logger=self._log)
        return self._backends[lang]

    def phonemize(self, text: str, language: str | None = None) -> str:
        """One IPA string for ``text`` (whitespace collapsed; zh tone digits → tone letters)."""
        clean = " ".join(str(text).split())
        if not clean:
            return ""
        lang = coerce_language(language) if language else self.language
        out = self.backend(lang).phonemize([clean], strip=True)[0]
        if lang == "cmn-latn-pinyin":
            out = out.translate(_TONES)
        return " ".join(out.split())


class Symmap:
    """Phoneme symbol → id. Specials: ``<unk>`` 0, ``<bos>`` 1, ``</eos>`` 2, ``<mask>`` 3."""

    #: alternative spellings of the specials found in older symmaps
    ALIASES = {BOS: ("<s>", "<bos>"), EOS: ("</s>", "</eos>", "<eos>"), UNK: ("<unk>",), MASK: ("<mask>",)}

    def __init__(self, mapping: Mapping[str, int]):
        self.mapping = {str(k): int(v) for k, v in mapping.items()}
        self.unknown: Counter[str] = Counter()  # every symbol ever mapped to <unk>, with counts
        ids = {name: next((self.mapping[a] for a in alts if a in self.mapping), None)
               for name, alts in self.ALIASES.items()}
        self.unk_id = 0 if ids[UNK] is None else ids[UNK]
        self.bos_id = 1 if ids[BOS] is None else ids[BOS]
        self.eos_id = 2 if ids[EOS] is None else ids[EOS]
        self.mask_id = 3 if ids[MASK] is None else ids[MASK]
        specials = {a for alts in self.ALIASES.values() for a in alts}
        self._symbols = {k: v for k, v in self.mapping.items() if k not in specials and k}
        self._longest = max((len(k) for k in self._symbols), default=1)
        self._inverse = {v: k for k, v in sorted(self.mapping.items(), key=lambda kv: kv[0], reverse=True)}

    @classmethod
    def builtin(cls) -> "Symmap":
        """The fixed inventory: specials 0–3, then :data:`IPA_INVENTORY` in order (all ids < 256)."""
        symbols = list(SPECIALS) + list(IPA_INVENTORY)
        if len(set(symbols)) != len(symbols) or len(symbols) > 256:
            raise AssertionError("IPA_INVENTORY has duplicates or more than 252 symbols")
        return cls({s: i for i, s in enumerate(symbols)})

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | str) -> "Symmap":
        """A checkpoint's symmap (``{symbol: id}`` or its JSON string) in place of the built-in one."""
        if isinstance(d, (str, bytes)):
            d = json.loads(d)
        if not isinstance(d, Mapping) or not d:
            raise UserError("The checkpoint's symmap is not a non-empty {phoneme: id} mapping.")
        bad = [k for k, v in d.items() if isinstance(v, bool) or not isinstance(v, int) or v < 0]
        if bad:
            raise UserError(f"The checkpoint's symmap has non-integer or negative ids for {bad[:5]}.")
        return cls(d)

    def to_dict(self) -> dict[str, int]:
        """The mapping, to store with a checkpoint (``json.dumps`` keeps it byte-stable)."""
        return dict(self.mapping)

    def cache_key(self) -> str:
        return stable_hash("symmap", sorted(self.mapping.items()))

    def __len__(self) -> int:
        return len(self.mapping)

    @property
    def size(self) -> int:
        """Embedding rows the ids need (largest id + 1)."""
        return max(self.mapping.values()) + 1

    def encode(self, ipa: str) -> list[int]:
        """``[<bos>, ids…, </eos>]`` by greedy longest match; unknown symbols → ``<unk>`` with a warning."""
        ids = [self.bos_id]
        missing: Counter[str] = Counter()
        i, n = 0, len(ipa)
        while i < n:
            for width in range(min(self._longest, n - i), 0, -1):
                sid = self._symbols.get(ipa[i:i + width])
                if sid is not None:
                    ids.append(sid)
                    i += width
                    break
            else:
                missing[ipa[i]] += 1
                ids.append(self.unk_id)
                i += 1
        ids.append(self.eos_id)
        if missing:
            self.unknown.update(missing)
            listed = ", ".join(f"{s!r}×{c}" for s, c in missing.most_common())
            warnings.warn(UnknownPhonemeWarning(
                f"{sum(missing.values())} phoneme symbol(s) not in the symmap were encoded as <unk>: {listed} "
                f"(in {ipa!r})"), stacklevel=2)
        return ids

    def decode(self, ids: list[int]) -> str:
        """Ids back to the IPA string (specials dropped) — for logs and samples."""
        skip = {self.bos_id, self.eos_id, self.mask_id}
        return "".join(self._inverse.get(int(i), "?") if int(i) != self.unk_id else "?"
                       for i in ids if int(i) not in skip)



class PhonemeBPE:
    """Phoneme ids from a HF ``tokenizers`` BPE ``tokenizer.json`` (the original's ``tokenizer_path``).

    The original vall-e encodes the whole IPA string with ``tokenizer.encode(ipa)``: no normalizer, no
    pre-tokenizer, its BPE merges applied in rank order, and the file's post-processor wrapping the ids as
    ``[<bos>, …, </eos>]``. :meth:`encode` returns those ids unchanged. A greedy longest match over the same
    vocabulary can disagree with BPE (the merge ranks, not the symbol lengths, decide), so fine-tuning a
    released checkpoint needs this file to see the ids it was trained on. A file without a post-processor is
    wrapped in ``<bos>``/``</eos>`` here, as the released file's post-processor does.

    The file is read as data (JSON), never run. :meth:`cache_key` hashes its content, so another file
    re-encodes the phoneme cache.
    """

    def __init__(self, path: str | Path, option: str | None = "model.tokenizer_path"):
        from audiotrain.safe_files import BadFileError, read_json, where

        self.path = Path(path).expanduser()
        data = read_json(self.path, option=option, expected=TOKENIZER_EXPECTED)
        if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
            raise BadFileError(f"{where(option, self.path)} is JSON but not a `tokenizers` tokenizer.json "
                               f"(no \"model\" section); pass {TOKENIZER_EXPECTED}.")
        try:
            from tokenizers import Tokenizer

            self.tokenizer = Tokenizer.from_str(json.dumps(data))
        except Exception as exc:  # the Rust side's parse error: one line of it
            from audiotrain.safe_files import first_line

            raise BadFileError(f"{where(option, self.path)} is not a tokenizer `tokenizers` can read "
                               f"({first_line(exc)}); pass {TOKENIZER_EXPECTED}.") from None
        ids = {name: next((self.tokenizer.token_to_id(a) for a in alts if self.tokenizer.token_to_id(a) is not None),
                          None) for name, alts in Symmap.ALIASES.items()}
        missing = [name for name in (BOS, EOS) if ids[name] is None]
        if missing:
            raise BadFileError(f"{where(option, self.path)} has no {' or '.join(missing)} token; pass "
                               f"{TOKENIZER_EXPECTED}.")
        self.bos_id, self.eos_id = int(ids[BOS]), int(ids[EOS])
        self.unk_id = 0 if ids[UNK] is None else int(ids[UNK])
        self.mask_id = 3 if ids[MASK] is None else int(ids[MASK])
        self._wraps = data.get("post_processor") is not None
        self._key = stable_hash("phoneme-bpe", json.dumps(data, sort_keys=True, ensure_ascii=False))
        self.unknown: Counter[str] = Counter()

    def cache_key(self) -> str:
        return self._key

    def __len__(self) -> int:
        return int(self.tokenizer.get_vocab_size(with_added_tokens=True))

    @property
    def size(self) -> int:
        """Embedding rows the ids need (largest id + 1)."""
        return max(self.tokenizer.get_vocab(with_added_tokens=True).values()) + 1

    def to_dict(self) -> dict[str, int]:
        """The vocabulary ``{token: id}`` (what a checkpoint's symmap holds)."""
        return dict(self.tokenizer.get_vocab(with_added_tokens=True))

    def encode(self, ipa: str) -> list[int]:
        """``tokenizers``' own ids for ``ipa`` (``[<bos>, …, </eos>]``); unknown symbols → ``<unk>`` with a warning."""
        enc = self.tokenizer.encode(ipa)
        ids = [int(i) for i in enc.ids]
        if not self._wraps:
            ids = [self.bos_id, *ids, self.eos_id]
        missing: Counter[str] = Counter(
            ipa[a:b] for i, (a, b) in zip(enc.ids, enc.offsets) if i == self.unk_id and b > a)
        if missing:
            self.unknown.update(missing)
            listed = ", ".join(f"{s!r}×{c}" for s, c in missing.most_common())
            warnings.warn(UnknownPhonemeWarning(
                f"{sum(missing.values())} phoneme symbol(s) not in {self.path.name} were encoded as <unk>: "
                f"{listed} (in {ipa!r})"), stacklevel=2)
        return ids

    def decode(self, ids: list[int]) -> str:
        """Ids back to the IPA string (specials dropped) — for logs and samples."""
        skip = {self.bos_id, self.eos_id, self.mask_id}
        return "".join("?" if int(i) == self.unk_id else (self.tokenizer.id_to_token(int(i)) or "?")
                       for i in ids if int(i) not in skip)
