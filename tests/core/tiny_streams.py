"""A tiny real plugin for the stream and clip tests: three audio roles, one frame-RMS encoder per role, a
character-code text encoder, and a one-layer backbone. Audio is written with numpy + soundfile."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import soundfile as sf
import torch
from omegaconf import OmegaConf

from audiotrain.data.audio_io import StreamSpec
from audiotrain.data.padding import pad_batch
from audiotrain.models.backbone import Backbone
from audiotrain.data.manifest import Manifest
from audiotrain.data.text_files import read_sidecar
from audiotrain.plugins.base import DataReader, Plugin
from audiotrain.encoders.base import FrozenEncoder, stable_hash

HOP = 400  # samples per RMS frame


def write_tone(path: Path, sr: int, seconds: float, gains: Sequence[float], freq: float = 220.0) -> Path:
    """A sine of ``freq`` Hz, one channel per gain (channel c = gains[c] * sine)."""
    t = np.arange(int(round(sr * seconds))) / sr
    tone = 0.5 * np.sin(2 * np.pi * freq * t)
    sf.write(str(path), np.stack([g * tone for g in gains], axis=1).astype(np.float32), sr)
    return path


class FrameRMS(FrozenEncoder):
    """One stream's audio → ``{"<role>_rms": (frames, channels)}``: the RMS of every ``HOP`` samples of the real
    audio (``audio_length``). Counts its calls, so a test can see which entries were built."""

    def __init__(self, role: str):
        self.name = f"rms-{role}"
        self.stream = role
        self.calls = 0

    def cache_key(self) -> str:
        return stable_hash("rms", HOP)

    def encode(self, example: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        self.calls += 1
        audio = example["audio"][:, : int(example["audio_length"])]
        frames = math.ceil(audio.shape[1] / HOP)
        padded = torch.nn.functional.pad(audio, (0, frames * HOP - audio.shape[1]))
        rms = padded.view(audio.shape[0], frames, HOP).pow(2).mean(-1).sqrt()
        return {f"{self.stream}_rms": rms.T.contiguous()}


class CharCodes(FrozenEncoder):
    """``example["text"]`` → ``{"chars": LongTensor}`` of its code points (a text-only encoder)."""

    name = "chars"

    def __init__(self):
        self.calls = 0

    def cache_key(self) -> str:
        return stable_hash("chars")

    def encode(self, example: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        self.calls += 1
        assert "audio" not in example  # a text encoder is given no audio
        return {"chars": torch.tensor([ord(c) for c in str(example["text"])], dtype=torch.long)}


class TinyBackbone(Backbone):
    """Predicts each example's mean mix RMS from its mean clip RMS: a real loss with real gradients."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(2, 2)

    def training_losses(self, batch, generator=None):
        pred = self.proj(batch["cond"].mean(dim=(1, 2)))
        return {"loss": torch.nn.functional.mse_loss(pred, batch["mix_rms"].mean(dim=1))}


STREAMS = {
    "mix": StreamSpec(sample_rate=16000, channels=2, min_duration=0.2, max_duration=10.0),
    "vocal": StreamSpec(sample_rate=8000, channels=1, min_duration=0.2, max_duration=10.0),
    "accompaniment": StreamSpec(sample_rate=12000, channels=2, min_duration=0.2, max_duration=10.0, required=False),
}


class StemFolder(DataReader):
    """``<key>.<role>.wav`` stems (any subset of the roles) and an optional ``<key>.txt``: one row per key."""

    description = "folder of <key>.<role>.wav stems"

    def matches(self, path: Path) -> bool:
        return path.is_dir() and any(path.glob("*.*.wav"))

    def read(self, path: Path, report) -> Manifest:
        rows: dict[str, dict] = {}
        for wav in sorted(path.glob("*.*.wav")):
            key, role = wav.name.split(".")[:2]
            row = rows.setdefault(key, {"key": key, "audio": {}, "text": ""})
            row["audio"][role] = str(wav)
        for key in list(rows):
            txt = path / f"{key}.txt"
            text = read_sidecar(txt, report, what="text file ") if txt.is_file() else ""
            if text is None:  # reported
                del rows[key]
            else:
                rows[key]["text"] = text
        return Manifest(list(rows.values()), str(path))


class TinyStreams(Plugin):
    name = "tinystreams"
    group_field = "singer"

    def __init__(self, streams: Mapping[str, StreamSpec] | None = None, clips: Sequence[Any] = ()):
        self.streams = dict(streams or STREAMS)
        self.clips = list(clips)

    def config_options(self):
        return {}

    def readers(self):
        return [StemFolder()]

    def example_data(self, directory, count: int = 4):
        """``count`` songs of mix + vocal stems (every other one with an accompaniment) at their roles' rates."""
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            roles = ("mix", "vocal", "accompaniment") if i % 2 == 0 else ("mix", "vocal")
            for j, role in enumerate(roles):
                write_tone(root / f"song{i}.{role}.wav", self.streams[role].sample_rate, 0.5 + 0.1 * i, [1.0],
                           freq=220.0 * (j + 1))
            (root / f"song{i}.txt").write_text(f"la la {i}", encoding="utf-8")
        return root

    def build_encoders(self, cfg):
        return [FrameRMS(role) for role in self.streams] + [CharCodes()]

    def build_backbone(self, cfg, *, device: str = "cpu"):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return TinyBackbone()

    def audio_streams(self, cfg):
        return self.streams

    def conditioning_clips(self, cfg):
        return self.clips

    def collate(self, items):
        mix, _, _ = pad_batch([it["mix_rms"] for it in items], dim=0)
        batch: dict[str, Any] = {"mix_rms": mix}
        batch["has_accompaniment"] = torch.tensor(["accompaniment_rms" in it for it in items])
        for spec in self.clips:
            key = next(iter(spec.features)) if spec.features else "audio"
            flat, _, _ = pad_batch([c[key] for it in items for c in it[spec.name]], dim=0 if spec.features else -1)
            batch[spec.name] = flat.view(len(items), spec.count, *flat.shape[1:])
            batch[f"{spec.name}_length"] = torch.stack([torch.stack([c[f"{key}_length"] for c in it[spec.name]])
                                                       for it in items])
        return batch


def module_cfg(seed: int = 7):
    return OmegaConf.create({"seed": seed, "trainer": {"accumulate_grad_batches": 1}})
