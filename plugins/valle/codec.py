"""EnCodec 24 kHz as VALL-E's audio tokenizer (transformers' ``EncodecModel``), frozen.

VALL-E trains on 8 residual levels of EnCodec codes (6 kbps), 75 frames per second of mono 24 kHz audio,
1024 codes per level. A clip of ``N`` samples gives exactly ``T = ceil(N / hop)`` frames, ``hop`` being
``prod(upsampling_ratios)`` (320 for the real model and for :meth:`Codec.tiny`), and decoding ``T``
frames gives ``T * hop`` samples.

``Codec.tiny`` is a randomly initialised, seeded stand-in for tests and the ``tiny`` preset: the same
24 kHz rate and hop (320 → 75 frames/s) and 8 levels, but 64 codes per level (6 bits, so 8 levels
are 3.6 kbps) and a network about 90 times smaller (≈170k parameters). Its codebooks are seeded
samples of its own encoder's output on seeded noise of varying loudness, so codes spread over the
whole codebook instead of all being 0.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from audiotrain.errors import UserError
from audiotrain.encoders.base import file_fingerprint, stable_hash

SAMPLE_RATE = 24000
LEVELS = 8  # 6 kbps on the 24 kHz model
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

#: the tiny codec's EncodecConfig fields (24 kHz, hop 320 → 75 frames/s, 8 levels × 64 codes)
TINY_CONFIG = dict(
    sampling_rate=SAMPLE_RATE, audio_channels=1, normalize=False, hidden_size=16, num_filters=4,
    num_residual_layers=1, upsampling_ratios=[8, 5, 4, 2], num_lstm_layers=1, codebook_size=64,
    codebook_dim=16, target_bandwidths=[0.9, 1.8, 3.6],  # 2, 4, 8 levels × 6 bits × 75 Hz
)


def weights_file(path: Path) -> Path | None:
    """The EnCodec weights file in ``path`` (safetensors preferred), or None."""
    return next((path / w for w in WEIGHT_FILES if (path / w).is_file()), None)


CODEC_EXPECTED = ("a local facebook/encodec_24khz folder (config.json + model.safetensors; e.g. `huggingface-cli "
                  "download facebook/encodec_24khz --local-dir DIR`), or use model.preset=tiny for a test run")


def check_dir(path: str | Path) -> Path:
    """``path`` as a Path if it is a folder with ``config.json`` and weights, else one sentence naming ``codec.path=``."""
    from audiotrain.hf_folder import check_folder

    return check_folder(path, option="model.codec.path", expected=CODEC_EXPECTED, weights=WEIGHT_FILES)


def read_config(p: Path) -> dict:
    """The folder's config.json (one sentence when it is not a JSON object)."""
    from audiotrain.safe_files import BadFileError, read_json

    config = read_json(p / "config.json", option="model.codec.path", expected=CODEC_EXPECTED)
    if not isinstance(config, dict):
        raise BadFileError(f"model.codec.path={p}: its config.json is not a JSON object; pass {CODEC_EXPECTED}.")
    return config


def dir_key(path: str | Path, levels: int = LEVELS) -> str:
    """Cache key of an EnCodec folder without loading its weights (config + weights fingerprint)."""
    p = check_dir(path)
    config = read_config(p)
    config.pop("transformers_version", None)
    return stable_hash("encodec", int(levels), config, file_fingerprint(str(weights_file(p))))


def tiny_key(seed: int = 0, levels: int = LEVELS) -> str:
    """Cache key of :meth:`Codec.tiny` (its weights follow from the seed and the config)."""
    return stable_hash("encodec-tiny", int(seed), int(levels), TINY_CONFIG)


def _bandwidth_for(config: Any, levels: int) -> float:
    """The configured bandwidth that yields exactly ``levels`` quantizers (6.0 for 8 on the real model)."""
    per_level = math.log2(config.codebook_size) * config.frame_rate / 1000
    for bw in config.target_bandwidths:
        if int(max(1, math.floor(bw / per_level + 1e-9))) == levels:
            return float(bw)
    raise UserError(f"This EnCodec model offers no bandwidth with {levels} levels "
                    f"(it has {list(config.target_bandwidths)} kbps): VALL-E needs {LEVELS}.")


class Codec:
    """A frozen EnCodec: ``encode(wav) -> (T, levels)`` codes and ``decode(codes) -> wav``."""

    def __init__(self, model: Any, key: str, levels: int = LEVELS):
        self.model = model.eval().requires_grad_(False)
        cfg = model.config
        if int(cfg.audio_channels) != 1:
            raise UserError("VALL-E's codec must be mono EnCodec (audio_channels=1), e.g. facebook/encodec_24khz.")
        self.sample_rate = int(cfg.sampling_rate)
        self.levels = int(levels)
        self.codebook_size = int(cfg.codebook_size)
        self.hop_length = int(math.prod(cfg.upsampling_ratios))
        self.frame_rate = self.sample_rate / self.hop_length  # 75.0 at 24 kHz
        self.bandwidth = _bandwidth_for(cfg, self.levels)
        self._key = key

    @classmethod
    def from_dir(cls, path: str | Path, levels: int = LEVELS, trust_pickle: bool = False) -> "Codec":
        """Load a local ``save_pretrained`` folder (``config.json`` + weights) as data; never downloads, runs no
        code from the folder; a ``pytorch_model.bin`` is read with ``weights_only=True`` unless ``trust_pickle``."""
        from transformers import EncodecModel

        from audiotrain.hf_folder import load_model

        p = check_dir(path)
        key = dir_key(p, levels)
        model = load_model(EncodecModel, p, option="model.codec.path", expected=CODEC_EXPECTED,
                           trust_pickle=trust_pickle)
        return cls(model, key, levels)

    @classmethod
    def tiny(cls, seed: int = 0, levels: int = LEVELS) -> "Codec":
        """A small random codec: 24 kHz, 75 frames/s, ``levels`` levels of 64 codes; same seed, same weights."""
        from transformers import EncodecConfig, EncodecModel

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            model = EncodecModel(EncodecConfig(**TINY_CONFIG)).eval()
            _seed_codebooks(model, int(seed))
        return cls(model, tiny_key(seed, levels), levels)

    def cache_key(self) -> str:
        return self._key

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: Any) -> "Codec":
        self.model.to(device)
        return self

    def num_frames(self, num_samples: int) -> int:
        """Frames for a clip of ``num_samples``: ``ceil(num_samples / hop_length)``."""
        return -(-int(num_samples) // self.hop_length)

    @torch.no_grad()
    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """Mono float audio at ``sample_rate``, shape (N,) or (1, N) → LongTensor (T, levels) on the CPU."""
        wav = torch.as_tensor(wav, dtype=torch.float32)
        if wav.dim() == 2 and wav.shape[0] == 1:
            wav = wav[0]
        if wav.dim() != 1 or wav.numel() == 0:
            raise ValueError(f"Codec.encode wants mono audio of shape (N,), got {tuple(wav.shape)}")
        out = self.model.encode(wav.to(self.device).view(1, 1, -1), bandwidth=self.bandwidth, return_dict=True)
        codes = out.audio_codes[0, 0]  # (levels, T): one chunk, one batch item
        return codes.transpose(0, 1).to("cpu", torch.long).contiguous()

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """LongTensor (T, levels) → float32 waveform (T * hop_length,) on the CPU."""
        codes = torch.as_tensor(codes).long()
        if codes.dim() != 2 or codes.shape[1] > len(self.model.quantizer.layers):
            raise ValueError(f"Codec.decode wants codes of shape (T, ≤{self.levels}), got {tuple(codes.shape)}")
        frames = codes.transpose(0, 1).to(self.device)[None, None]  # (chunks=1, batch=1, levels, T)
        audio = self.model.decode(frames, [None], return_dict=True).audio_values
        return audio[0, 0].to("cpu", torch.float32).contiguous()


def _seed_codebooks(model: Any, seed: int) -> None:
    """Fill each level's codebook with frames of the encoder's residual on seeded noise (plus jitter).

    The noise's loudness changes every frame (log-uniform, about -60 to -6 dBFS), so the codebooks
    cover quiet and loud audio alike and real speech uses most codes of every level.
    """
    gen = torch.Generator().manual_seed(seed)
    cfg = model.config
    hop, n = int(math.prod(cfg.upsampling_ratios)), 2 * int(cfg.sampling_rate)
    envelope = torch.empty(n // hop + 1).uniform_(-7.0, -0.7, generator=gen).exp().repeat_interleave(hop)[:n]
    noise = torch.randn(n, generator=gen) * envelope
    with torch.no_grad():
        residual = model.encoder(noise.view(1, 1, -1))[0].transpose(0, 1)  # (frames, dim)
        for layer in model.quantizer.layers:
            book = layer.codebook
            pick = torch.randint(0, residual.shape[0], (cfg.codebook_size,), generator=gen)
            spread = (residual - residual.mean(0)).std().clamp_min(1e-6)
            embed = residual[pick] + torch.randn(book.embed.shape, generator=gen) * spread * 0.1
            book.embed.copy_(embed)
            book.embed_avg.copy_(embed)
            residual = residual - embed[book.quantize(residual)]
