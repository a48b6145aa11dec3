"""Building VALL-E's frozen encoders (lazily: a cached dataset loads neither espeak-ng nor the codec)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from audiotrain.errors import UserError
from audiotrain.encoders.lazy import LazyEncoder

from audiotrain_valle import codec as codec_mod


def codec_frame_rate(cfg: Any) -> float:
    """Codes per second, read from the codec's config without loading it (75 for EnCodec 24 kHz)."""
    path = cfg.model.codec.get("path")
    if not path:
        return 75.0
    conf = codec_mod.read_config(codec_mod.check_dir(path))
    return float(conf.get("sampling_rate", 24000)) / math.prod(conf.get("upsampling_ratios", [8, 5, 4, 2]))


def codec_factory(cfg: Any):
    path = cfg.model.codec.get("path")
    if path:
        trust = bool(cfg.get("trust_pickle", False))
        return codec_mod.dir_key(path), lambda: codec_mod.Codec.from_dir(path, trust_pickle=trust)
    if str(cfg.model.preset) != "tiny":
        raise UserError(f"model.preset={cfg.model.preset} needs the EnCodec 24 kHz weights: pass model.codec.path=DIR "
                        "(a local facebook/encodec_24khz folder), or use model.preset=tiny for the tiny random codec.")
    return codec_mod.tiny_key(0), lambda: codec_mod.Codec.tiny(seed=0)


BESIDE_WEIGHTS = "tokenizer.json"


def tokenizer_problems(cfg: Any) -> list[str]:
    """``model.tokenizer_path`` checked before anything is built: each problem one sentence."""
    path = cfg.model.get("tokenizer_path")
    if not path:
        return []
    from audiotrain_valle.phonemes import PhonemeBPE

    try:
        PhonemeBPE(path)
    except UserError as exc:
        return [str(exc)]
    return []


def phoneme_ids(cfg: Any, symmap=None, say=None):
    """What turns IPA into ids: ``model.tokenizer_path`` (the original's BPE tokenizer.json); else, when
    fine-tuning ``model.weights``, a tokenizer.json beside them; else the checkpoint's symmap or the built-in one.

    Fine-tuning weights with a greedy symmap says in one sentence (through ``say``) that ids may differ."""
    from audiotrain_valle.phonemes import PhonemeBPE, Symmap

    if say is None:
        from audiotrain.train.console import console

        def say(text: str) -> None:
            console.print(f"[yellow]{text}[/]", highlight=False)

    path = cfg.model.get("tokenizer_path")
    if path:
        return PhonemeBPE(path)
    weights = weights_path(cfg)
    if weights is not None:
        beside = weights.parent / BESIDE_WEIGHTS
        if beside.is_file():
            say(f"Phoneme ids come from {beside}, the tokenizer.json beside model.weights "
                "(set model.tokenizer_path=FILE to use another).")
            return PhonemeBPE(beside, option=None)
        say(f"model.weights={weights} is being fine-tuned with phoneme ids from audiotrain's greedy symbol match, "
            "which may differ from the ids the original vall-e trained it with: pass "
            "model.tokenizer_path=.../tokenizer.json (the BPE file shipped beside the original's config) to encode "
            "exactly as it does.")
    return symmap or Symmap.builtin()


def build_encoders(cfg: Any, symmap=None, say=None) -> list[LazyEncoder]:
    from audiotrain_valle.features import CodecFeature, PhonemeFeature
    from audiotrain_valle.phonemes import Phonemizer

    language = str(cfg.model.language)
    phonemes = PhonemeFeature(Phonemizer(language), phoneme_ids(cfg, symmap, say), language)
    codec_key, make_codec = codec_factory(cfg)
    return [
        CodecFeature.lazy(CodecFeature.__name__ + codec_key, lambda: CodecFeature(make_codec())),
        LazyEncoder("phonemes", phonemes.cache_key(), lambda: phonemes),
    ]


def weights_path(cfg: Any) -> Path | None:
    from audiotrain.safe_files import check_file

    from audiotrain_valle.checkpoint import EXPECTED

    w = cfg.model.get("weights")
    if not w:
        return None
    return check_file(w, option="model.weights", expected=EXPECTED)
