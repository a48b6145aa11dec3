"""Building ACE-Step's frozen encoders (lazily) and the trainable backbone from the composed config."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from audiotrain.errors import UserError
from audiotrain.models.presets import TINY_SEED, require_preset, seeded
from audiotrain.encoders.base import stable_hash
from audiotrain.encoders.frozen import weights_key
from audiotrain.encoders.lazy import LazyEncoder

from audiotrain_acestep import checkpoint as ckpt
from audiotrain_acestep import ssl_teachers
from audiotrain_acestep.presets import PRESETS


def preset_name(cfg: Any) -> str:
    return require_preset(cfg.model.preset, PRESETS)


def transformer_config(cfg: Any) -> dict:
    if preset_name(cfg) == "tiny":
        return dict(PRESETS["tiny"])
    return {**PRESETS["v1-3.5b"], **ckpt.read_config(ckpt.locate(cfg.model.checkpoint_dir) / "ace_step_transformer")}


def lyric_vocab(cfg: Any, root: Path | None) -> str | None:
    if cfg.model.get("lyric_vocab_path"):
        from audiotrain.safe_files import check_file

        return str(check_file(cfg.model.lyric_vocab_path, option="model.lyric_vocab_path",
                              expected="ACE-Step's lyrics_utils/vocab.json"))
    if root is None:
        return None  # tiny: the built-in 6693-id vocabulary
    for cand in (root / "vocab.json", root / "lyrics_utils" / "vocab.json"):
        if cand.is_file():
            return str(cand)
    raise UserError(
        f"The lyric tokenizer's vocab.json is not in {root}: copy acestep/models/lyrics_utils/vocab.json from the "
        "ACE-Step repository there, or pass model.lyric_vocab_path=FILE.")


def text_feature_key(text_key: str, variants: int) -> str:
    """The text features' cache key: the encoder's, and the number of prompts cached per song when it is > 1."""
    return stable_hash("text", text_key) if variants == 1 else stable_hash("text", text_key, "variants", variants)


def build_encoders(cfg: Any) -> list[LazyEncoder]:
    from audiotrain_acestep.features import LatentFeature, SpeakerFeature
    from audiotrain_acestep.lyric_features import LyricTokenizerFeature
    from audiotrain_acestep.lyric_tokenizer import LyricTokenizer
    from audiotrain_acestep.music_dcae import MusicDCAE
    from audiotrain_acestep.text_encoder import TextEncoder, TextEncoderFeature

    preset = preset_name(cfg)
    tcfg = transformer_config(cfg)
    max_text = int(cfg.model.max_text_tokens)
    variants = int(cfg.model.get("prompt_variants") or 1)
    if preset == "tiny":
        root = None
        from audiotrain_acestep.dcae_presets import DCAE_PRESETS, VOCODER_PRESETS

        dcae_key = stable_hash("tiny-dcae", TINY_SEED, DCAE_PRESETS["tiny"], VOCODER_PRESETS["tiny"])
        from audiotrain_acestep.text_encoder import tiny_umt5_config

        text_key = stable_hash("tiny-umt5", TINY_SEED, max_text, tiny_umt5_config().to_dict())
        make_dcae = lambda: seeded(lambda: MusicDCAE.from_preset("tiny"))  # noqa: E731
        make_text = lambda: TextEncoder.tiny(seed=TINY_SEED, max_length=max_text)  # noqa: E731
    else:
        root = ckpt.locate(cfg.model.checkpoint_dir)
        dcae_key = weights_key("dcae", files=[*sorted((root / "music_dcae_f8c8").glob("*.safetensors")),
                                              *sorted((root / "music_vocoder").glob("*.safetensors"))])
        text_key = weights_key("umt5", max_text, files=[*sorted((root / "umt5-base").glob("*.safetensors")),
                                                        *sorted((root / "umt5-base").glob("tokenizer*.json"))])
        make_dcae = lambda: MusicDCAE.from_pretrained(root / "music_dcae_f8c8", root / "music_vocoder")  # noqa: E731
        trust = bool(cfg.get("trust_pickle", False))
        make_text = lambda: TextEncoder.from_dir(root / "umt5-base", max_length=max_text, trust_pickle=trust)  # noqa: E731
    vocab = lyric_vocab(cfg, root)
    lyric = LyricTokenizerFeature(LyricTokenizer(vocab))
    speaker = SpeakerFeature(int(tcfg["speaker_embedding_dim"]), trust_pickle=bool(cfg.get("trust_pickle", False)))
    latents_key = stable_hash("latents", dcae_key)
    encoders = [
        LatentFeature.lazy(latents_key, lambda: LatentFeature(make_dcae(), latents_key)),
        LazyEncoder("text", text_feature_key(text_key, variants), lambda: TextEncoderFeature(make_text(), variants)),
        LazyEncoder("lyrics", lyric.cache_key(), lambda: lyric),
        LazyEncoder("speaker", speaker.cache_key(), lambda: speaker),
    ]
    teachers = ssl_teachers.lazy_tokenizer(cfg, tcfg)  # None unless both folders are set and ssl_coeff > 0
    if teachers is not None:
        encoders.append(teachers)
    return encoders


def build_backbone(cfg: Any, device: str = "cpu"):
    from audiotrain_acestep.backbone import ACEStepBackbone
    from audiotrain_acestep.music_dcae import MusicDCAE
    from audiotrain_acestep.transformer import ACEStepTransformer2DModel

    preset = preset_name(cfg)
    settings = dict(cfg.model)
    if device == "meta":  # module names only (LoRA target checks): no weights, no files
        return ACEStepBackbone(ACEStepTransformer2DModel(dict(PRESETS[preset])), settings)
    if preset == "tiny":
        transformer = seeded(lambda: ACEStepTransformer2DModel(dict(PRESETS["tiny"])))
        decoder = lambda: seeded(lambda: MusicDCAE.from_preset("tiny"))  # noqa: E731
    else:
        root = ckpt.locate(cfg.model.checkpoint_dir)
        transformer = ckpt.load_transformer(root)
        decoder = lambda: MusicDCAE.from_pretrained(root / "music_dcae_f8c8", root / "music_vocoder")  # noqa: E731
    return ACEStepBackbone(transformer, settings, decoder_factory=decoder)


def transformer_summary(cfg: Any) -> str:
    return json.dumps(transformer_config(cfg))
