"""``MusicDCAE``: ACE-Step's audio <-> latent codec (mel DC-AE + ADaMoS HiFi-GAN vocoder), plain PyTorch.

encode: ``audios (B, 2, N) @ sr (48 kHz)`` -> resample to 44.1 kHz -> right-pad the batch to a multiple of
``8 * 512 = 4096`` samples -> per-channel log-mel ``(B, 2, 128, F)`` (F = padded/512) -> ``(mel + 11) / 14`` then
``(x - 0.5) / 0.5`` -> DC-AE encoder -> ``z (B, 8, 16, F/8)`` -> ``latents = (z + 1.9091) * 0.1786``.

decode: ``z = latents / 0.1786 - 1.9091`` -> DC-AE decoder -> ``mel * 0.5 + 0.5`` -> ``* 14 - 11`` -> vocoder per
channel -> ``(B, 2, F*512) @ 44.1 kHz`` -> resample to ``sr`` -> crop to ``audio_lengths``.

Latent-length rule (the reference pipeline's ``.long()`` truncation):
``latent_lengths = floor(audio_lengths * 44100 / (sr * 512 * 8))``, computed in exact integer arithmetic
(10.7666 latent frames per second; 240 s -> 2583). The latent tensor itself has ``T = ceil(ceil(N*44100/sr)/4096)``
frames for the longest clip, so ``latent_lengths <= T``.

Checkpoints: ``from_pretrained(dcae_dir, vocoder_dir)`` reads the released folder layout
``<dir>/config.json`` (optional; missing/empty/partial -> the ``"v1"`` preset fills the gaps) and
``<dir>/diffusion_pytorch_model.safetensors`` (required, strict key/shape match). The log-mel buffers are kept in
float32 whatever ``dtype`` is requested.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from audiotrain.models.state_dict import load_strict

from .dcae import DCAE_CONFIG_KEYS, AutoencoderDC
from .dcae_presets import dcae_preset, vocoder_preset
from .resample import resample
from .vocoder import VOCODER_CONFIG_KEYS, ADaMoSHiFiGANV1

__all__ = [
    "MusicDCAE",
    "SCALE_FACTOR",
    "SHIFT_FACTOR",
    "MIN_MEL_VALUE",
    "MAX_MEL_VALUE",
    "WEIGHTS_NAME",
    "CONFIG_NAME",
]

SCALE_FACTOR = 0.1786
SHIFT_FACTOR = -1.9091
MIN_MEL_VALUE = -11.0
MAX_MEL_VALUE = 3.0
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
CONFIG_NAME = "config.json"


def _read_component(directory: str | Path, what: str, preset: dict, keys: Sequence[str]) -> tuple[dict, Path]:
    """Config (preset overridden by the known keys of ``config.json`` if present) and the weights path."""
    from audiotrain.hf_folder import MissingFile
    from audiotrain.safe_files import BadFileError, read_json

    directory = Path(directory)
    weights = directory / WEIGHTS_NAME
    expected = f"the released {directory.name}/ folder ({CONFIG_NAME} + {WEIGHTS_NAME}) of ACE-Step v1-3.5B"
    if not weights.is_file():
        raise MissingFile(
            f"MusicDCAE.from_pretrained: the {what} weights file {weights} does not exist "
            f"(expected the released folder layout {directory}/{{{CONFIG_NAME},{WEIGHTS_NAME}}})."
        )
    config = dict(preset)
    cfg_path = directory / CONFIG_NAME
    if cfg_path.is_file() and cfg_path.stat().st_size and cfg_path.read_bytes().strip():
        loaded = read_json(cfg_path, expected=expected)
        if not isinstance(loaded, dict):
            raise BadFileError(f"{cfg_path} must hold a JSON object, got {type(loaded).__name__}; pass {expected}.")
        config.update({k: v for k, v in loaded.items() if k in keys})
    return config, weights


def _load_strict(module: nn.Module, weights: Path, what: str, device: torch.device | str) -> None:
    """Load ``weights`` (read as data) into a (meta-built) ``module`` by assignment after checking keys and
    shapes exactly."""
    from audiotrain.safe_files import load_safetensors

    state = load_safetensors(weights, expected=f"the {what} weights of the ACE-Step v1-3.5B release")
    load_strict(module, {k: v.to(device) for k, v in state.items()}, str(weights), f"the {what} architecture",
                "check its config.json", assign=True)


class MusicDCAE(nn.Module):
    """Stereo music codec: ``.dcae`` (:class:`AutoencoderDC`) and ``.vocoder`` (:class:`ADaMoSHiFiGANV1`).

    Args:
        dcae_config: AutoencoderDC constructor kwargs (default ``DCAE_PRESETS["v1"]``).
        vocoder_config: ADaMoSHiFiGANV1 constructor kwargs (default ``VOCODER_PRESETS["v1"]``).
        source_sample_rate: default input/output rate of ``encode``/``decode`` (48 kHz).
    """

    def __init__(self, dcae_config: dict | None = None, vocoder_config: dict | None = None,
                 source_sample_rate: int = 48000) -> None:
        super().__init__()
        self.dcae_config = dict(dcae_preset("v1") if dcae_config is None else dcae_config)
        self.vocoder_config = dict(vocoder_preset("v1") if vocoder_config is None else vocoder_config)
        self.dcae = AutoencoderDC.from_config(self.dcae_config)
        self.vocoder = ADaMoSHiFiGANV1.from_config(self.vocoder_config)
        self.source_sample_rate = int(source_sample_rate)
        self.sample_rate = int(self.vocoder.sampling_rate)  # internal rate, 44.1 kHz
        self.hop_length = int(self.vocoder.hop_length)  # 512 samples per mel frame
        self.time_multiple = int(self.dcae.spatial_compression_ratio)  # 8 mel frames per latent frame
        n_mels = self.vocoder.mel_transform.n_mels
        if n_mels % self.time_multiple:
            raise ValueError(f"n_mels={n_mels} must be divisible by the DC-AE compression {self.time_multiple}")
        self.scale_factor = SCALE_FACTOR
        self.shift_factor = SHIFT_FACTOR
        self.min_mel_value = MIN_MEL_VALUE
        self.max_mel_value = MAX_MEL_VALUE

    # ------------------------------------------------------------------ sizes
    @property
    def latent_rate(self) -> float:
        """Latent frames per second (44100 / 512 / 8 = 10.7666 for the released model)."""
        return self.sample_rate / self.hop_length / self.time_multiple

    def latent_lengths_for(self, audio_lengths: torch.Tensor | Sequence[int], sr: int | None = None) -> torch.Tensor:
        """``floor(len * 44100 / (sr * 512 * 8))`` per clip, as a long tensor (exact integer arithmetic)."""
        sr = self.source_sample_rate if sr is None else int(sr)
        lengths = torch.as_tensor(audio_lengths).to(torch.long).cpu()
        return (lengths * self.sample_rate) // (sr * self.hop_length * self.time_multiple)

    # ------------------------------------------------------------------ codec
    @torch.no_grad()
    def encode(self, audios: torch.Tensor, audio_lengths: torch.Tensor | None = None,
               sr: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``audios (B, 2, N)`` float @ ``sr`` (default 48 kHz), ``audio_lengths (B,)`` valid samples per clip ->
        ``latents (B, 8, 16, T)`` in the dtype of the DC-AE weights and ``latent_lengths (B,)`` long (on
        ``audios.device``). ``T = ceil(ceil(N * 44100 / sr) / 4096)``."""
        if audios.ndim != 3:
            raise ValueError(f"audios must be (B, channels, N), got shape {tuple(audios.shape)}")
        sr = self.source_sample_rate if sr is None else int(sr)
        batch, _, length = audios.shape
        if audio_lengths is None:
            audio_lengths = torch.full((batch,), length, dtype=torch.long)
        audio = resample(audios.to(torch.float32), sr, self.sample_rate)
        block = self.hop_length * self.time_multiple
        remainder = audio.shape[-1] % block
        if remainder:
            audio = F.pad(audio, (0, block - remainder))
        mels = self.vocoder.mel_transform(audio)  # (B, 2, n_mels, F)
        mels = (mels - self.min_mel_value) / (self.max_mel_value - self.min_mel_value)
        mels = (mels - 0.5) / 0.5
        dtype = next(self.dcae.parameters()).dtype
        z = self.dcae.encoder(mels.to(dtype))
        latents = (z - self.shift_factor) * self.scale_factor
        return latents, self.latent_lengths_for(audio_lengths, sr).to(audios.device)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, audio_lengths: torch.Tensor | Sequence[int] | None = None,
               sr: int | None = None) -> tuple[int, torch.Tensor]:
        """``latents (B, 8, 16, T)`` -> ``(sr, wavs (B, 2, N))`` float32 at ``sr`` (default 48 kHz).

        Without ``audio_lengths``, ``N = ceil(T * 4096 * sr / 44100)``. With them, ``N = min(max(audio_lengths),
        decoded length)`` and every clip's samples past its own length are zero.
        """
        sr = self.source_sample_rate if sr is None else int(sr)
        dtype = next(self.dcae.parameters()).dtype
        z = latents.to(dtype) / self.scale_factor + self.shift_factor
        mels = self.dcae.decoder(z)  # (B, 2, n_mels, F)
        mels = mels * 0.5 + 0.5
        mels = mels * (self.max_mel_value - self.min_mel_value) + self.min_mel_value
        batch, channels = mels.shape[:2]
        voc_dtype = next(self.vocoder.head.parameters()).dtype
        wav = self.vocoder.decode(mels.flatten(0, 1).to(voc_dtype))  # (B*2, 1, F*512)
        wav = wav.reshape(batch, channels, -1).to(torch.float32)
        wav = resample(wav, self.sample_rate, sr)
        if audio_lengths is not None:
            lengths = torch.as_tensor(audio_lengths).to(torch.long).cpu()
            n = min(int(lengths.max()), wav.shape[-1])
            wav = wav[..., :n].clone()
            mask = torch.arange(n)[None, :] < lengths[:, None]
            wav = wav * mask[:, None, :].to(device=wav.device, dtype=wav.dtype)
        return sr, wav

    def forward(self, audios: torch.Tensor, audio_lengths: torch.Tensor | None = None,
                sr: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Same as :meth:`encode`."""
        return self.encode(audios, audio_lengths, sr)

    # ------------------------------------------------------------------ construction / IO
    @classmethod
    def from_preset(cls, name: str = "tiny", source_sample_rate: int = 48000) -> "MusicDCAE":
        """Randomly initialised model from ``DCAE_PRESETS[name]`` and ``VOCODER_PRESETS[name]``."""
        return cls(dcae_preset(name), vocoder_preset(name), source_sample_rate)

    @classmethod
    def from_pretrained(cls, dcae_dir: str | Path, vocoder_dir: str | Path, dtype: torch.dtype = torch.float32,
                        device: torch.device | str = "cpu", source_sample_rate: int = 48000) -> "MusicDCAE":
        """Load the released folders (``music_dcae_f8c8/``, ``music_vocoder/``) strictly; see the module docstring.

        Raises ``FileNotFoundError`` naming the missing ``diffusion_pytorch_model.safetensors`` and ``ValueError`` on
        key or shape mismatches.
        """
        dcae_cfg, dcae_weights = _read_component(dcae_dir, "DCAE", dcae_preset("v1"), DCAE_CONFIG_KEYS)
        voc_cfg, voc_weights = _read_component(vocoder_dir, "vocoder", vocoder_preset("v1"), VOCODER_CONFIG_KEYS)
        with torch.device("meta"):
            model = cls(dcae_cfg, voc_cfg, source_sample_rate)
        _load_strict(model.dcae, dcae_weights, "DCAE", device)
        _load_strict(model.vocoder, voc_weights, "vocoder", device)
        model.to(device=device, dtype=dtype)
        model.vocoder.mel_transform.to(torch.float32)
        return model.eval()

    def save_pretrained(self, dcae_dir: str | Path, vocoder_dir: str | Path) -> None:
        """Write both components in the released layout (``config.json`` + ``diffusion_pytorch_model.safetensors``)."""
        for directory, name, module, config in (
            (dcae_dir, "AutoencoderDC", self.dcae, self.dcae_config),
            (vocoder_dir, "ADaMoSHiFiGANV1", self.vocoder, self.vocoder_config),
        ):
            directory = Path(directory)
            directory.mkdir(parents=True, exist_ok=True)
            (directory / CONFIG_NAME).write_text(json.dumps({"_class_name": name, **config}, indent=2), encoding="utf-8")
            state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
            save_file(state, str(directory / WEIGHTS_NAME))
