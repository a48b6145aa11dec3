"""SongGen's reference voice (spec songgen.md §3.1, §4): MERT states of a few fixed 3 s crops of each song's vocal
stem, cached once, and the voice each training step uses — one of the crops, or none (the stage's voice drop).

Stream: ``voice``, 24 kHz mono, decoded from the row's vocal stem (``StreamSpec(source="vocal")``: the row names
one file, the codec reads it at 16 kHz and MERT at 24 kHz). A song without a vocal stem has no voice stream, so no
voice features: its voice is masked.

Cache (:class:`VoiceFeature`, name ``voice``): per song, ``model.voice_crops`` crops of exactly 3 s whose starts
are drawn from the song's key (:func:`crop_starts`: the same every run, so the cache is too), each normalised as
MERT's feature extractor does and run through MERT (``mert.py``): ``mert_hidden`` ``[K, T, 25, H]`` float16 (half
of float32's bytes: 224 × 25 × 1024 × 2 ≈ 11.5 MB a crop with MERT-v1-330M) and ``mert_voiced`` ``[K]`` bool. A
song shorter than 3 s gives the whole song zero-padded. A crop that is silent (its RMS under -60 dBFS: an
instrumental passage of the stem) is not voiced: its states are zeros and it always gives a masked voice, as the
original's crop with too little vocal energy becomes an all-zero waveform. Songs with equal vocal files share one
cache entry (the entry is keyed by the stream's bytes), so the first one's crops.

Each training step (:func:`choose`, through the core's ``Plugin.choose_variant`` rng, seeded by the run's seed,
the step and the example, so a resumed run draws the same): a voice type from ``model.voice_choices`` uniformly
(``mert_input``: a voice; ``random``: none, the original's voice dropout) and one of the K crops uniformly.
Evaluation and samples (no rng): crop 0, with its voice.

Collate (:func:`collate_voice`): ``mert_hidden`` ``[B, T, 25, H]`` float32 and ``voice_mask`` ``[B, T]`` bool; a
dropped, silent or missing voice is a row of zeros, all False — how the original represents an all-zero reference
waveform (the composite gives a masked memory position exactly zero attention weight).
"""
from __future__ import annotations

import random
from typing import Any, Mapping, Sequence

import torch

from audiotrain.encoders.base import stable_hash
from audiotrain.encoders.frozen import FrozenFeature
from audiotrain.encoders.inputs import real_mono
from audiotrain.encoders.lazy import LazyEncoder
from audiotrain.errors import UserError
from audiotrain_songgen.mert import CROP_SAMPLES, MertEncoder, frames_for

STREAM = "voice"
#: the stem the voice is cut from
SOURCE = "vocal"
CHOICES = ("mert_input", "random")
#: a crop whose RMS is under this (dBFS) is silent: no voice
SILENT_DBFS = -60.0
FEATURE_VERSION = "songgen-voice-v1"


def voice_on(cfg: Any) -> bool:
    """``model.voice`` (default true): the voice prompt is fed."""
    return bool(cfg.model.get("voice", True))


def voice_choices(cfg: Any) -> list[str]:
    """``model.voice_choices`` (default ``["mert_input"]``: always a voice)."""
    return [str(c) for c in (cfg.model.get("voice_choices") or ["mert_input"])]


def crop_starts(key: str, length: int, count: int) -> list[int]:
    """The first sample of each of ``count`` 3 s crops of a ``length``-sample voice stream, drawn from the song's
    ``key`` alone: uniform over the starts where the whole crop fits (0 when the song is 3 s or shorter)."""
    room = max(0, int(length) - CROP_SAMPLES)
    return [random.Random(f"{FEATURE_VERSION}:{key}:{i}").randint(0, room) for i in range(int(count))]


def is_silent(crop: torch.Tensor) -> bool:
    """No samples, or an RMS under :data:`SILENT_DBFS`."""
    if crop.numel() == 0:
        return True
    rms = float(crop.double().pow(2).mean().sqrt())
    return rms < 10.0 ** (SILENT_DBFS / 20.0)


class VoiceFeature(FrozenFeature):
    """``example["audio"]`` (1, N) at 24 kHz, its ``audio_length`` and ``key`` → ``{"mert_hidden": [K, T, 25, H]
    float16, "mert_voiced": [K] bool}`` (module doc)."""

    name = "voice"
    stream = STREAM

    def __init__(self, encoder: MertEncoder, crops: int):
        super().__init__(encoder, self.feature_key(encoder.cache_key(), crops))
        self.crops = int(crops)

    @staticmethod
    def feature_key(mert_key: str, crops: int) -> str:
        """The feature's cache key from MERT's (``tiny_mert_key`` / ``mert_dir_key``) and the crop count."""
        return stable_hash(FEATURE_VERSION, mert_key, int(crops), CROP_SAMPLES, SILENT_DBFS)

    def features(self, example: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        from audiotrain_songgen.mert import normalise

        audio = real_mono(example, "MERT")
        length = audio.numel()
        enc: MertEncoder = self.module
        inputs, voiced = [], []
        for start in crop_starts(str(example["key"]), length, self.crops):
            real = audio[start: min(start + CROP_SAMPLES, length)].cpu()
            voiced.append(not is_silent(real))
            inputs.append(normalise(real))
        hidden = torch.zeros(self.crops, enc.frames(), enc.num_states, enc.hidden_size, dtype=torch.float16)
        for i, x in enumerate(inputs):
            # one crop at a time: its states are the same bits whatever the other crops are (a batch of another
            # size may round differently); silent crops are never attended to, so MERT does not run on them
            if voiced[i]:
                hidden[i] = enc.states(x[None])[0].to(torch.float16)
        return {"mert_hidden": hidden, "mert_voiced": torch.tensor(voiced, dtype=torch.bool)}


def _mert_fields(cfg: Any) -> tuple[str, dict[str, Any]]:
    """``(how messages name it, its mapped config fields)`` of the run's MERT (config.json only for a folder)."""
    from audiotrain_songgen import mert

    path = cfg.model.get("mert_path")
    if path:
        return f"{mert.MERT_OPTION}={path}", mert.read_fields(str(path))
    return "the tiny MERT (no model.mert_path)", dict(mert.TINY_MERT)


def _mert_source(cfg: Any) -> tuple[str, str, dict[str, Any], Any]:
    """``(how messages name it, MERT's cache key, its mapped config fields, build)`` of the run's MERT."""
    from audiotrain_songgen import mert
    from audiotrain_songgen.encoders import TINY_SEED

    shown, fields = _mert_fields(cfg)
    path = cfg.model.get("mert_path")
    if path:
        path, trust = str(path), bool(cfg.get("trust_pickle", False))
        return shown, mert.mert_dir_key(path), fields, lambda: MertEncoder.from_dir(path, trust_pickle=trust)
    return shown, mert.tiny_mert_key(TINY_SEED), fields, lambda: MertEncoder.tiny(TINY_SEED)


def _check_fits(shown: str, fields: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> None:
    want_h, want_n = int(model_cfg["mert"]["hidden_size"]), int(model_cfg["mert"]["num_layers"])
    got_h, got_n = int(fields["hidden_size"]), int(fields["num_hidden_layers"]) + 1
    if (got_h, got_n) != (want_h, want_n):
        raise UserError(f"{shown} gives {got_n} hidden states of width {got_h}, but the model's voice branch "
                        f"(mert_layer_agg, audio_mert_to_dec_proj) takes {want_n} of width {want_h}: give "
                        f"model.mert_path=<the MERT it was trained with> (MERT-v1-330M: 25 of 1024), or "
                        f"model.voice=false.")


def check_mert(cfg: Any, model_cfg: Mapping[str, Any]) -> None:
    """One sentence (a UserError) when the run's MERT cannot feed the model's voice branch (config.json only)."""
    shown, fields = _mert_fields(cfg)
    _check_fits(shown, fields, model_cfg)


def voice_encoder(cfg: Any, model_cfg: Mapping[str, Any]) -> LazyEncoder:
    """The cached voice feature behind a LazyEncoder (MERT is built on first encode; its key is known now)."""
    shown, key, fields, build = _mert_source(cfg)
    _check_fits(shown, fields, model_cfg)
    crops = int(cfg.model.get("voice_crops", 2))
    return LazyEncoder(VoiceFeature.name, VoiceFeature.feature_key(key, crops),
                       lambda: VoiceFeature(build(), crops), stream=STREAM)


def voice_layout(cfg: Any, model_cfg: Mapping[str, Any]) -> tuple[int, int, int] | None:
    """``(frames, states, width)`` of a collated voice (224, 25, 1024 for MERT-v1-330M), or None with the voice off."""
    if not voice_on(cfg):
        return None
    _, fields = _mert_fields(cfg)
    return (frames_for(CROP_SAMPLES, fields["conv_kernel"], fields["conv_stride"]),
            int(model_cfg["mert"]["num_layers"]), int(model_cfg["mert"]["hidden_size"]))


def choose(features: Mapping[str, Any], rng: random.Random | None, choices: Sequence[str]) -> Mapping[str, Any]:
    """One example's voice as a step uses it (module doc): ``mert_hidden`` ``[T, 25, H]`` of one crop and
    ``voice_on`` (a bool tensor). Features without cached crops pass unchanged; ``features`` is not changed."""
    hidden = features.get("mert_hidden")
    if hidden is None or hidden.dim() != 4:
        return features
    out = dict(features)
    voiced = out.pop("mert_voiced")
    if rng is None:
        kind, j = "mert_input", 0
    else:
        kind = choices[rng.randrange(len(choices))]
        j = rng.randrange(hidden.shape[0])
    out["mert_hidden"] = hidden[j]
    out["voice_on"] = torch.tensor(kind == "mert_input" and bool(voiced[j]))
    return out


def collate_voice(items: Sequence[Mapping[str, Any]], layout: tuple[int, int, int]) -> dict[str, torch.Tensor]:
    """``mert_hidden`` ``[B, T, 25, H]`` float32 and ``voice_mask`` ``[B, T]`` (module doc)."""
    frames, states, width = layout
    mert = torch.zeros(len(items), frames, states, width)
    mask = torch.zeros(len(items), frames, dtype=torch.bool)
    for i, item in enumerate(items):
        item = choose(item, None, CHOICES)  # crops not chosen yet (a caller without choose_variant): crop 0
        hidden = item.get("mert_hidden")
        if hidden is None or not bool(item.get("voice_on", True)):
            continue
        if tuple(hidden.shape) != (frames, states, width):
            raise ValueError(f"a cached voice has the shape {tuple(hidden.shape)}, not {(frames, states, width)}: "
                             f"it was made by another MERT")
        mert[i] = hidden.float()
        mask[i] = True
    return {"mert_hidden": mert, "voice_mask": mask}
