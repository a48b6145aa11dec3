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


def build_encoders(cfg: Any, symmap=None) -> list[LazyEncoder]:
    from audiotrain_valle.features import CodecFeature, PhonemeFeature
    from audiotrain_valle.phonemes import Phonemizer, Symmap

    language = str(cfg.model.language)
    symmap = symmap or Symmap.builtin()
    phonemes = PhonemeFeature(Phonemizer(language), symmap, language)
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
