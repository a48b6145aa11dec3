"""Building SongGen's parts from a run's config: the frozen encoders (X-Codec per stream, the description's T5,
the lyrics tokenizer, MERT over the vocal stem) behind lazy loaders with their cache keys known up front, and the
backbone (the composite: random for a preset, or a checkpoint folder's weights).

``tiny``: a tiny random X-Codec, a tiny random T5 of the preset's text-encoder config and a tiny random MERT (seeded:
the same every run), the built-in lyrics vocabulary. The released presets read local folders only: ``model.codec_path``
(X-Codec in transformers' layout), ``model.text_encoder_path`` (google/flan-t5-large), ``model.lyrics_vocab_path``
(SongGen's vocab.json), ``model.mert_path`` (MERT-v1-330M, for the voice prompt: ``voice.py``) and
``model.checkpoint_dir`` (the SongGen folder); nothing is downloaded.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from audiotrain.encoders.base import stable_hash
from audiotrain.encoders.lazy import LazyEncoder

#: the seed of every tiny random part (codec, T5, composite)
TINY_SEED = 0


def _tiny(cfg: Any) -> bool:
    return str(cfg.model.preset) == "tiny" and not cfg.model.get("checkpoint_dir")


def tiny_text_encoder(model_cfg: Mapping[str, Any]):
    """The tiny preset's T5 (the composite's text-encoder config, seeded) with the byte tokenizer."""
    from transformers import T5EncoderModel

    from audiotrain_songgen.composite import t5_config
    from audiotrain_songgen.text_encoder import DescriptionEncoder, t5_byte_tokenizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = T5EncoderModel(t5_config(model_cfg))
    return DescriptionEncoder(model, t5_byte_tokenizer(), tiny_text_key(model_cfg))


def tiny_text_key(model_cfg: Mapping[str, Any]) -> str:
    return stable_hash("songgen-tiny-t5", TINY_SEED, dict(model_cfg["text_encoder"]), "byte-tokenizer-v1")


#: codecs built in this process, by (cache key, trust_pickle): the encoders and the backbone's samples share one
_CODECS: dict[tuple[str, bool], Any] = {}


def codec_factory(cfg: Any, lazy_key: bool = False) -> tuple[str | None, Callable[[], Any]]:
    """``(cache key, build)`` of the run's X-Codec (``model.codec_path``, else the tiny random codec); ``build``
    loads it on first call, once per process (the frozen codes encoders and the backbone's samples share it).
    ``lazy_key``: the key is not computed now (None; the folder is first read when ``build`` runs)."""
    from audiotrain_songgen import codec as xcodec

    m = cfg.model
    trust = bool(cfg.get("trust_pickle", False))
    if m.get("codec_path"):
        path = str(m.codec_path)
        key_of, load = (lambda: xcodec.codec_dir_key(path)), (lambda: xcodec.load_codec(path, trust_pickle=trust))
    else:
        key_of, load = (lambda: xcodec.tiny_codec_key(TINY_SEED)), (lambda: xcodec.tiny_codec(TINY_SEED))
    key = None if lazy_key else key_of()

    def build() -> Any:
        slot = (key if key is not None else key_of(), trust)
        if slot not in _CODECS:
            _CODECS[slot] = load()
        return _CODECS[slot]

    return key, build


def build_encoders(cfg: Any, model_cfg: Mapping[str, Any]) -> list[LazyEncoder]:
    from audiotrain_songgen import codec as xcodec
    from audiotrain_songgen import voice
    from audiotrain_songgen.lyrics import LyricsFeature
    from audiotrain_songgen.plugin import STREAM_ROLES
    from audiotrain_songgen.text_encoder import DescriptionEncoder, DescriptionFeature, text_dir_key

    m = cfg.model
    trust = bool(cfg.get("trust_pickle", False))
    codec_key, make_codec = codec_factory(cfg)
    if m.get("text_encoder_path"):
        text_key = text_dir_key(m.text_encoder_path, "model.text_encoder_path")
        make_text = lambda: DescriptionEncoder.from_dir(m.text_encoder_path, "model.text_encoder_path",  # noqa: E731
                                                        trust_pickle=trust)
    else:
        text_key = tiny_text_key(model_cfg)
        make_text = lambda: tiny_text_encoder(model_cfg)  # noqa: E731
    lyrics = LyricsFeature(vocab_path=m.get("lyrics_vocab_path"))
    encoders = [
        *(xcodec.CodecFeature.lazy_for(role, codec_key, make_codec) for role in STREAM_ROLES),
        LazyEncoder("text", text_key, lambda: DescriptionFeature(make_text())),
        LazyEncoder("lyrics", lyrics.cache_key(), lambda: lyrics),
    ]
    if voice.voice_on(cfg):
        encoders.append(voice.voice_encoder(cfg, model_cfg))
    return encoders


def build_backbone(cfg: Any, model_cfg: Mapping[str, Any], device: str = "cpu"):
    from audiotrain_songgen.backbone import SongGenBackbone
    from audiotrain_songgen.composite import SongGenComposite

    m = cfg.model
    if m.get("checkpoint_dir") and device != "meta":
        from audiotrain_songgen.checkpoint import load_folder

        model = load_folder(m.checkpoint_dir, option="model.checkpoint_dir").model
        _retarget(model, model_cfg)
    elif device == "meta":
        model = SongGenComposite(model_cfg)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TINY_SEED)
            model = SongGenComposite(model_cfg)
    model.train()
    dec = model_cfg["decoder"]
    make_codec = codec_factory(cfg, lazy_key=True)[1] if device != "meta" else None  # samples decode with it
    return SongGenBackbone(model, pattern=str(dec["track_pattern"]), add_vocal_loss=bool(dec["add_vocal_loss"]),
                           vocal_loss_weight=float(m.get("vocal_loss_weight", 0.1)),
                           codebook_weighting=bool(m.get("codebook_weighting", True)),
                           freeze_cross=bool(m.get("freeze_cross", False)), codec_factory=make_codec,
                           max_new_frames=int(m.get("max_new_frames", 1500)),
                           temperature=float(m.get("temperature", 1.0)))


def _retarget(model: Any, model_cfg: Mapping[str, Any]) -> None:
    """A loaded checkpoint trained with another track pattern (mixed_pro weights for a dual-track stage, as
    SongGen's recipe starts inter_A_V from mixed_pro's step 1): the pattern is the run's; vocal heads the run
    does not train are kept (they are in the checkpoint) but unused."""
    model.cfg["decoder"]["track_pattern"] = model_cfg["decoder"]["track_pattern"]
