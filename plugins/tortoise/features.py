"""The TorToiSe plugin's frozen encoders, run once per clip into the feature cache (spec tortoise.md §2.4–2.5).

- ``speech`` (the clip's audio at 22,050 Hz mono): ``mel`` (80, frames) — the normalised log-mel of the clip
  itself, what the two conditioning clips are cut from — and ``codes`` (250,) — the DVAE codes of the clip
  zero-padded to 255,995 samples, exactly as DLAS computes them on the GPU every step (its ``to_codes``
  injector runs on the padded wav), plus ``wav_length`` (samples). The model crops the codes to the clip or,
  with ``tortoise_compat``, trains on all of them (the original's behaviour).
- ``text`` (the transcript): ``text_ids``, TorToiSe's BPE ids of the cleaned text (no start/stop).

Files: ``model.dvae_path`` (dvae.pth), ``model.mel_norms_path`` (mel_norms.pth), ``model.tokenizer_path``
(tokenizer.json); the tiny preset builds a random DVAE, unit norms and the built-in vocabulary. Each cache key
names what makes the features (the files' fingerprints, the constants), so a changed file re-encodes.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

from audiotrain.encoders.base import FrozenEncoder, file_fingerprint, stable_hash
from audiotrain.encoders.frozen import FrozenFeature
from audiotrain.encoders.lazy import LazyEncoder

#: DLAS's max_wav_length: every clip is zero-padded to it before its codes are computed
PADDED_SAMPLES = 255995
SAMPLE_RATE = 22050
TINY_SEED = 0
VERSION = "tortoise-speech-v1"


class SpeechFrontEnd(torch.nn.Module):
    """The mel front end and the DVAE: a clip → its mel and the codes of its padded wav."""

    def __init__(self, mel: torch.nn.Module, dvae: torch.nn.Module):
        super().__init__()
        self.mel, self.dvae = mel, dvae

    @torch.no_grad()
    def forward(self, wav: torch.Tensor) -> dict[str, torch.Tensor]:
        wav = wav.float().reshape(-1)[:PADDED_SAMPLES]
        mel = self.mel(wav[None])[0]
        padded = F.pad(wav, (0, PADDED_SAMPLES - wav.numel()))
        codes = self.dvae.codes(self.mel(padded[None]))[0]
        return {"mel": mel.cpu(), "codes": codes.long().cpu(), "wav_length": torch.tensor(wav.numel())}


class SpeechFeature(FrozenFeature):
    name = "speech"
    stream = "main"

    def features(self, example: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        audio = torch.as_tensor(example["audio"], dtype=torch.float32)
        audio = audio[0] if audio.dim() == 2 else audio
        length = example.get("audio_length")
        if length is not None:
            audio = audio[: int(length)]
        dev = self.device
        out = self.module(audio.to(dev))
        return {k: v.cpu() for k, v in out.items()}


class TextFeature(FrozenEncoder):
    name = "text"
    stream = None

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def cache_key(self) -> str:
        return stable_hash("tortoise-text-v1", self.tokenizer.cache_key())

    def encode(self, example: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        return {"text_ids": torch.tensor(self.tokenizer.encode(str(example.get("text") or "")), dtype=torch.long)}


def tokenizer_of(cfg: Any):
    from audiotrain_tortoise.tokenizer import VoiceTokenizer

    path = cfg.model.get("tokenizer_path")
    cleaner = cfg.model.get("text_cleaner")  # null: DLAS's choice (english when the json's language is "en")
    cleaner = str(cleaner) if cleaner else None
    return (VoiceTokenizer(path, cleaner=cleaner, option="model.tokenizer_path") if path
            else VoiceTokenizer(cleaner=cleaner))


def speech_key(cfg: Any) -> str:
    """The speech features' cache key without loading anything."""
    m = cfg.model
    dvae = file_fingerprint(str(m.dvae_path)) if m.get("dvae_path") else stable_hash("tiny-dvae", TINY_SEED)
    norms = file_fingerprint(str(m.mel_norms_path)) if m.get("mel_norms_path") else "unit-norms"
    return stable_hash(VERSION, dvae, norms, PADDED_SAMPLES, SAMPLE_RATE)


def speech_front_end(cfg: Any) -> SpeechFrontEnd:
    from audiotrain_tortoise.dvae import tiny_dvae
    from audiotrain_tortoise.mel import MelSpectrogram

    m = cfg.model
    mel = MelSpectrogram(m.get("mel_norms_path"), option="model.mel_norms_path")
    if m.get("dvae_path"):
        from audiotrain_tortoise.checkpoint import load_dvae

        dvae = load_dvae(m.dvae_path, option="model.dvae_path")
    else:
        dvae = tiny_dvae(TINY_SEED)
    return SpeechFrontEnd(mel, dvae).eval()


def build_encoders(cfg: Any) -> list[FrozenEncoder]:
    return [LazyEncoder("speech", speech_key(cfg), lambda: SpeechFeature(speech_front_end(cfg), speech_key(cfg)),
                        stream="main"),
            TextFeature(tokenizer_of(cfg))]
