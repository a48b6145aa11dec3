"""SongGen's config checks, each a sentence naming the value and the fix (collected by the core with its own)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from audiotrain_songgen.patterns import PATTERNS

FOLDERS = {
    "checkpoint_dir": "a SongGen folder (config.json + model.safetensors), e.g. a local copy of LiuZH-19/SongGen_mixed_pro",
    "codec_path": "a local X-Codec folder in transformers' layout (config.json + model.safetensors)",
    "text_encoder_path": "a local google/flan-t5-large folder (config.json, weights, tokenizer)",
    "mert_path": "a local m-a-p/MERT-v1-330M folder (config.json + model.safetensors or pytorch_model.bin)",
    "clap_path": "a local CLAP folder saved by transformers (e.g. laion/larger_clap_music_and_speech)",
}


def voice_problems(m: Any) -> list[str]:
    """The voice prompt's settings: model.voice, voice_crops, voice_choices, and a MERT for a released preset."""
    from collections.abc import Sequence

    from audiotrain_songgen.voice import CHOICES

    out = []
    on = m.get("voice", True)
    if not isinstance(on, bool):
        out.append(f"model.voice={on} must be true (feed the reference voice, MERT over the vocal stem) or false.")
    crops = m.get("voice_crops", 2)
    if isinstance(crops, bool) or not isinstance(crops, int) or crops < 1:
        out.append(f"model.voice_crops={crops} must be a whole number >= 1 (the 3 s crops cached per song; 2 is "
                   f"the default).")
    choices = m.get("voice_choices")
    if (isinstance(choices, str) or not isinstance(choices, Sequence) or not choices
            or any(str(c) not in CHOICES for c in choices)):
        out.append(f"model.voice_choices={choices} must be a non-empty list of {' / '.join(CHOICES)} (one is drawn "
                   f"per example and step: e.g. [mert_input,mert_input,random] drops the voice with p=1/3).")
    if on is True and str(m.get("preset")) != "tiny" and not m.get("mert_path"):
        out.append(f"model.preset={m.get('preset')} feeds a reference voice through MERT-v1-330M: give "
                   f"model.mert_path=<a local m-a-p/MERT-v1-330M folder>, or model.voice=false to train without "
                   f"a voice prompt.")
    return out


def problems(cfg: Any, plugin: Any) -> list[str]:
    from audiotrain.models.presets import preset_problems
    from audiotrain_songgen.presets import PRESETS

    m = cfg.model
    out = preset_problems(m.get("preset"), PRESETS)
    pattern = m.get("track_pattern")
    if pattern is not None and str(pattern) not in PATTERNS:
        out.append(f"model.track_pattern={pattern} is unknown: use one of {', '.join(PATTERNS)} (null: the preset's).")
    for key, what in FOLDERS.items():
        value = m.get(key)
        if value and not Path(str(value)).expanduser().is_dir():
            out.append(f"model.{key}={value} is not a folder: give {what}.")
    vocab = m.get("lyrics_vocab_path")
    if vocab and not Path(str(vocab)).expanduser().is_file():
        out.append(f"model.lyrics_vocab_path={vocab} is not a file: give SongGen's songgen/lyrics_utils/vocab.json.")
    if not out and str(m.get("preset")) != "tiny":
        need = [f"model.{k}" for k in ("codec_path", "text_encoder_path") if not m.get(k)]
        if not m.get("lyrics_vocab_path"):
            need.append("model.lyrics_vocab_path")
        if need:
            out.append(f"model.preset={m.preset} reads its frozen encoders from local folders: give "
                       f"{', '.join(need)} (X-Codec, flan-t5-large, SongGen's vocab.json), or use model.preset=tiny.")
    out += voice_problems(m)
    weight = m.get("vocal_loss_weight")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
        out.append(f"model.vocal_loss_weight={weight} must be a number >= 0 (SongGen uses 0.1).")
    new = m.get("max_new_frames")
    if isinstance(new, bool) or not isinstance(new, int) or new < 1:
        out.append(f"model.max_new_frames={new} must be a whole number of frames >= 1 (50 a second; 1500 = 30 s).")
    if not out:
        try:
            mc = plugin.model_config(cfg)
        except (ValueError, OSError) as exc:
            out.append(f"{str(exc).rstrip('.')}: fix the model settings (model.preset, model.track_pattern).")
        else:
            frames = int(float(cfg.dataset.max_duration) * 50) + 9
            length = frames * (2 if str(mc["decoder"]["track_pattern"]).startswith("interleaving") else 1)
            most = int(mc["decoder"]["max_position_embeddings"])
            if length > most:
                out.append(f"dataset.max_duration={cfg.dataset.max_duration} gives decoder sequences of up to {length} "
                           f"positions, more than the model's {most} (max_position_embeddings): lower "
                           f"dataset.max_duration to {max(1, (most // (length // frames) - 9) // 50)} s or less.")
            out += [p for p in [mert_problem(cfg, mc)] if p]
    return out


def mert_problem(cfg: Any, model_cfg: Any) -> str | None:
    """Why the run's MERT cannot feed the voice (its folder's config.json refused, or states of another width /
    count than the model's voice branch takes), read from config.json alone; None when it can or the voice is off."""
    from audiotrain.errors import UserError
    from audiotrain_songgen import voice

    if not voice.voice_on(cfg):
        return None
    try:
        voice.check_mert(cfg, model_cfg)
    except UserError as exc:
        return str(exc)
    return None
