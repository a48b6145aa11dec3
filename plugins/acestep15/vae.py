"""ACE-Step 1.5's Oobleck VAE (48 kHz stereo ↔ 64-channel latents at 25 frames/s), diffusers ``AutoencoderOobleck``
architecture and state-dict names, plain PyTorch (diffusers is not needed).

- :class:`OobleckConfig` holds the constructor values of a ``vae/config.json``; presets in :data:`VAE_PRESETS`:
  ``release`` (the released folder: hidden 128, multiples [1,2,4,8,16], ratios [2,4,4,6,10] → hop 1920, latent 64)
  and ``tiny`` (same ratios and hop, widths 16/8 for CPU tests).
- :class:`OobleckVAE` — ``encoder`` (conv1 → blocks → snake1 → conv2 to ``encoder_hidden_size`` channels) and
  ``decoder`` (conv1 → blocks → snake1 → conv2, no bias). ``encode(audio [B,C,S])`` → :class:`Posterior` over
  ``[B, D, T]`` with ``T = S // hop``; ``decode(z [B, D, T])`` → audio ``[B, C, T * hop]``.
- The posterior (diffusers ``OobleckDiagonalGaussianDistribution``): the encoder output split in half along
  channels into ``mean`` and ``scale``; ``std = softplus(scale) + 1e-4``; ``sample() = mean + std * N(0, I)``.
  ACE-Step 1.5 trains on ``latent_dist.sample()`` (spec §0), so the cache keeps (mean, std) and
  :func:`sample` draws a latent per step from a seeded generator.
- Time-major helpers for the cache and the DiT (``[B, T, D]``, as ACE-Step's ``target_latents``):
  :meth:`OobleckVAE.encode_posterior` (tiled, :mod:`.vae_tiling`) and :meth:`OobleckVAE.decode_latents`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from audiotrain.errors import UserError

from .vae_blocks import DecoderBlock, EncoderBlock, Snake1d, WNConv1d

__all__ = ["OobleckConfig", "VAE_PRESETS", "OobleckVAE", "Posterior", "build_vae", "sample"]

#: diffusers ``config.json`` bookkeeping keys that are not constructor values
_CONFIG_BOOKKEEPING = ("_class_name", "_diffusers_version", "_name_or_path", "_use_default_values")


@dataclass(frozen=True)
class OobleckConfig:
    """Constructor values of ``AutoencoderOobleck`` (the names its ``config.json`` uses)."""

    encoder_hidden_size: int = 128
    downsampling_ratios: tuple[int, ...] = (2, 4, 4, 6, 10)
    channel_multiples: tuple[int, ...] = (1, 2, 4, 8, 16)
    decoder_channels: int = 128
    decoder_input_channels: int = 64
    audio_channels: int = 2
    sampling_rate: int = 48000

    def __post_init__(self) -> None:
        object.__setattr__(self, "downsampling_ratios", tuple(int(r) for r in self.downsampling_ratios))
        object.__setattr__(self, "channel_multiples", tuple(int(m) for m in self.channel_multiples))
        if len(self.downsampling_ratios) != len(self.channel_multiples):
            raise UserError(f"the VAE's downsampling_ratios {list(self.downsampling_ratios)} and channel_multiples "
                            f"{list(self.channel_multiples)} must have one entry per block each; give both the "
                            f"same length.")
        if self.encoder_hidden_size != 2 * self.decoder_input_channels:
            raise UserError(f"the VAE's encoder_hidden_size {self.encoder_hidden_size} must be twice "
                            f"decoder_input_channels {self.decoder_input_channels} (the encoder's output is the "
                            f"posterior's mean and scale); set one to match the other.")

    @property
    def hop_length(self) -> int:
        """Audio samples per latent frame (the product of the ratios: 1920 for the release)."""
        return int(math.prod(self.downsampling_ratios))

    @property
    def latent_channels(self) -> int:
        """Width of a latent frame (``decoder_input_channels``: 64 for the release)."""
        return self.decoder_input_channels

    @property
    def frame_rate(self) -> float:
        """Latent frames per second (25 for the release)."""
        return self.sampling_rate / self.hop_length

    def to_json(self) -> dict[str, Any]:
        """The ``config.json`` of a diffusers ``vae/`` folder."""
        doc = asdict(self)
        doc["downsampling_ratios"] = list(self.downsampling_ratios)
        doc["channel_multiples"] = list(self.channel_multiples)
        return {"_class_name": "AutoencoderOobleck", **doc}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], *, where: str = "config.json") -> "OobleckConfig":
        """A config from a ``vae/config.json`` (diffusers bookkeeping keys ignored; unknown keys refused)."""
        if not isinstance(doc, Mapping):
            raise UserError(f"{where} holds a {type(doc).__name__}, not a JSON object; pass the vae/ folder's "
                            f"config.json.")
        kind = doc.get("_class_name", "AutoencoderOobleck")
        if kind != "AutoencoderOobleck":
            raise UserError(f"{where} describes a {kind}, not an AutoencoderOobleck; pass ACE-Step 1.5's vae/ folder.")
        known = set(cls.__dataclass_fields__)
        values = {k: v for k, v in doc.items() if k not in _CONFIG_BOOKKEEPING}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"{where} has settings AutoencoderOobleck does not take ({', '.join(unknown)}); pass "
                            f"ACE-Step 1.5's vae/config.json.")
        return cls(**values)


#: ``release``: ACE-Step 1.5's ``vae/config.json``; ``tiny``: same hop (1920, 25 frames/s), latent 8, for CPU tests.
VAE_PRESETS: dict[str, OobleckConfig] = {
    "release": OobleckConfig(),
    "tiny": OobleckConfig(encoder_hidden_size=16, channel_multiples=(1, 1, 2, 2, 2), decoder_channels=8,
                          decoder_input_channels=8),
}


def _preset(name: str | OobleckConfig) -> OobleckConfig:
    if isinstance(name, OobleckConfig):
        return name
    if name not in VAE_PRESETS:
        raise UserError(f"unknown VAE preset {name!r}; use one of {', '.join(sorted(VAE_PRESETS))}.")
    return VAE_PRESETS[name]


class Posterior:
    """Diagonal Gaussian over latents ``[B, D, T]``: ``mean`` and ``std = softplus(scale) + 1e-4``."""

    def __init__(self, moments: torch.Tensor):
        self.mean, scale = moments.chunk(2, dim=1)
        self.std = F.softplus(scale) + 1e-4

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """``mean + std * N(0, I)`` (noise drawn on the generator's device, then moved)."""
        return sample(self.mean, self.std, generator)

    def mode(self) -> torch.Tensor:
        """The mean."""
        return self.mean


def sample(mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One latent ``mean + std * eps``, ``eps ~ N(0, I)`` drawn from ``generator`` (any layout; same generator state
    → the same latent, bit for bit). The noise is drawn in float32 on the generator's device (CPU when None)."""
    if mean.shape != std.shape:
        raise UserError(f"the posterior's mean {tuple(mean.shape)} and std {tuple(std.shape)} differ in shape; pass "
                        f"the pair encode_posterior returned for one song.")
    device = generator.device if generator is not None else torch.device("cpu")
    eps = torch.randn(mean.shape, generator=generator, device=device, dtype=torch.float32)
    return (mean.float() + std.float() * eps.to(mean.device)).to(mean.dtype)


class OobleckEncoder(nn.Module):
    """conv1 (audio → hidden, k 7) → encoder blocks → snake1 → conv2 (→ ``encoder_hidden_size``, k 3)."""

    def __init__(self, cfg: OobleckConfig):
        super().__init__()
        mults = (1, *cfg.channel_multiples)
        width = cfg.encoder_hidden_size
        self.conv1 = WNConv1d(cfg.audio_channels, width, 7, padding=3)
        self.block = nn.ModuleList(EncoderBlock(width * mults[i], width * mults[i + 1], s)
                                   for i, s in enumerate(cfg.downsampling_ratios))
        self.snake1 = Snake1d(width * mults[-1])
        self.conv2 = WNConv1d(width * mults[-1], width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for blk in self.block:
            x = blk(x)
        return self.conv2(self.snake1(x))


class OobleckDecoder(nn.Module):
    """conv1 (latent → widest, k 7) → decoder blocks (ratios reversed) → snake1 → conv2 (→ audio, k 7, no bias)."""

    def __init__(self, cfg: OobleckConfig):
        super().__init__()
        mults = (1, *cfg.channel_multiples)
        width, n = cfg.decoder_channels, len(cfg.downsampling_ratios)
        self.conv1 = WNConv1d(cfg.decoder_input_channels, width * mults[-1], 7, padding=3)
        self.block = nn.ModuleList(DecoderBlock(width * mults[n - i], width * mults[n - i - 1], s)
                                   for i, s in enumerate(reversed(cfg.downsampling_ratios)))
        self.snake1 = Snake1d(width)
        self.conv2 = WNConv1d(width, cfg.audio_channels, 7, padding=3, bias=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = self.conv1(z)
        for blk in self.block:
            z = blk(z)
        return self.conv2(self.snake1(z))


class OobleckVAE(nn.Module):
    """The autoencoder (see the module doc). Frozen in audiotrain: build, load, then ``eval()``."""

    def __init__(self, config: OobleckConfig = VAE_PRESETS["release"]):
        super().__init__()
        self.config = config
        self.encoder = OobleckEncoder(config)
        self.decoder = OobleckDecoder(config)
        self._key: str | None = None

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @property
    def sampling_rate(self) -> int:
        return self.config.sampling_rate

    def _check_audio(self, audio: torch.Tensor) -> None:
        cfg = self.config
        if audio.dim() != 3 or audio.shape[1] != cfg.audio_channels:
            raise UserError(f"the VAE takes audio shaped [batch, {cfg.audio_channels}, samples], got "
                            f"{list(audio.shape)}; make the audio {cfg.audio_channels}-channel at "
                            f"{cfg.sampling_rate} Hz first.")
        if audio.shape[-1] < cfg.hop_length:
            raise UserError(f"the audio has {audio.shape[-1]} samples, fewer than one latent frame "
                            f"({cfg.hop_length} at {cfg.sampling_rate} Hz); pass a longer clip.")

    def encode(self, audio: torch.Tensor) -> Posterior:
        """Audio ``[B, C, S]`` → posterior over ``[B, D, S // hop]`` in one pass (see :meth:`encode_posterior` for
        long songs)."""
        self._check_audio(audio)
        weight = self.encoder.conv1.weight_v
        return Posterior(self.encoder(audio.to(weight.device, weight.dtype)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents ``[B, D, T]`` → audio ``[B, C, T * hop]`` at ``sampling_rate``."""
        if z.dim() != 3 or z.shape[1] != self.latent_channels:
            raise UserError(f"the VAE decodes latents shaped [batch, {self.latent_channels}, frames], got "
                            f"{list(z.shape)}; pass channel-first latents (decode_latents takes [batch, frames, "
                            f"{self.latent_channels}]).")
        weight = self.decoder.conv1.weight_v
        return self.decoder(z.to(weight.device, weight.dtype))

    @torch.no_grad()
    def encode_posterior(self, audio: torch.Tensor, *, chunk_seconds: float = 30.0,
                         overlap_seconds: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Audio ``[B, C, S]`` (or ``[C, S]``) → ``(mean, std)`` each ``[B, S // hop, D]`` (time-major; no batch
        dim when the input had none), encoded in tiles as ACE-Step 1.5's preprocessing does (:mod:`.vae_tiling`)."""
        from .vae_tiling import tiled_moments

        single = audio.dim() == 2
        batch = audio.unsqueeze(0) if single else audio
        self._check_audio(batch)
        post = Posterior(tiled_moments(self, batch, chunk_seconds=chunk_seconds, overlap_seconds=overlap_seconds))
        mean, std = post.mean.transpose(1, 2), post.std.transpose(1, 2)
        return (mean[0], std[0]) if single else (mean, std)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Time-major latents ``[B, T, D]`` (or ``[T, D]``) → audio ``[B, C, T * hop]`` (or ``[C, T * hop]``)."""
        single = latents.dim() == 2
        z = (latents.unsqueeze(0) if single else latents).transpose(1, 2)
        audio = self.decode(z)
        return audio[0] if single else audio

    def cache_key(self) -> str:
        """Hash of the config and the weights (memoised: the VAE is frozen)."""
        if self._key is None:
            from audiotrain.encoders.base import stable_hash, state_dict_digest

            self._key = stable_hash("acestep15-oobleck", self.config.to_json(), state_dict_digest(self))
        return self._key


def build_vae(preset: str | OobleckConfig = "release", *, seed: int | None = None) -> OobleckVAE:
    """An :class:`OobleckVAE` from a preset name or config, randomly initialised (``seed`` fixes the weights and
    leaves the global RNG as it was). Build under ``torch.device("meta")`` for a weightless layout."""
    cfg = _preset(preset)
    if seed is None:
        return OobleckVAE(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return OobleckVAE(cfg)
