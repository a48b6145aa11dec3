"""TorToiSe's discrete VAE (DL-Art-School ``lucidrains_dvae``, ``dvae.pth``): mel spectrogram ↔ mel codes.

Fine-tuning only needs its encoder and codebook: every training clip's 80-band mel (:mod:`.mel`) becomes one code
per 4 frames (1024 samples), the targets UnifiedVoice learns. The decoder is built too, so the released file loads
strictly (all 53 keys), and :meth:`DiscreteVAE.decode` turns codes back into a mel for previews. The module is
frozen and stays in eval mode (the codebook's EMA update is a training-time feature of the original that never
runs here).

Layout for ``num_layers`` L, ``hidden_dim`` h, ``codebook_dim`` d, ``num_resnet_blocks`` R (release: 2, 512, 512, 3;
widths ``h·2^i``: 512, 1024)::

    encoder.{i}.0       Conv1d(in → h·2^i, kernel, stride 2, padding (kernel−1)//2) + ReLU, i < L
    encoder.{L+r}.net   ResBlock at h·2^(L−1): conv3 → ReLU → conv3 → ReLU → conv1, plus the input, r < R
    encoder.{L+R}       Conv1d(h·2^(L−1) → d, 1)
    decoder.0           Conv1d(d → h·2^(L−1), 1)
    decoder.{1+r}.net   ResBlock, r < R
    decoder.{1+R+i}.0.conv   nearest ×2 upsampling, then Conv1d(kernel, padding (kernel−1)//2) + ReLU; widths
                        h·2^(L−1) → h·2^(L−1) → … → h
    decoder.{1+R+L}     Conv1d(h → 80, 1)
    codebook.embed (d, n), codebook.cluster_size (n), codebook.embed_avg (d, n)   buffers

Codes: ``codes(mel)`` = for every encoder output frame, the codebook column nearest in L2
(argmin ``|x|² − 2 x·e + |e|²``). A mel of T frames gives ``ceil(ceil(T/2)/2)`` codes (1000 → 250, 172 → 43).
``decode(codes)`` = the decoder on the looked-up codebook vectors: (B, 80, 4·N).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .presets import resolve_dvae_config


class ResBlock(nn.Module):
    """``net(x) + x`` with ``net`` = conv3, ReLU, conv3, ReLU, conv1."""

    def __init__(self, chan: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(chan, chan, 3, padding=1), nn.ReLU(), nn.Conv1d(chan, chan, 3, padding=1),
                                 nn.ReLU(), nn.Conv1d(chan, chan, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) + x


class UpsampledConv(nn.Module):
    """Nearest-neighbour upsampling by ``stride``, then ``conv``."""

    def __init__(self, n_in: int, n_out: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv1d(n_in, n_out, kernel, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=self.stride, mode="nearest"))


class Quantize(nn.Module):
    """The VQ codebook: ``embed`` (dim, n) columns, plus the EMA statistics the file carries."""

    def __init__(self, dim: int, n_embed: int) -> None:
        super().__init__()
        embed = torch.randn(dim, n_embed)
        self.register_buffer("embed", embed)
        self.register_buffer("cluster_size", torch.zeros(n_embed))
        self.register_buffer("embed_avg", embed.clone())

    def nearest(self, x: torch.Tensor) -> torch.Tensor:
        """(..., dim) → (...) long: the index of the nearest column by L2 distance."""
        flat = x.reshape(-1, x.size(-1)).to(self.embed.dtype)
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.embed + self.embed.pow(2).sum(0, keepdim=True)
        return dist.argmin(dim=1).view(x.shape[:-1])

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """(...) ids → (..., dim) codebook vectors."""
        return F.embedding(codes, self.embed.t())


class DiscreteVAE(nn.Module):
    """The 1-D DVAE of dvae.pth (module doc), frozen and in eval mode."""

    def __init__(self, cfg: str | Mapping[str, Any] = "release") -> None:
        super().__init__()
        self.cfg = c = resolve_dvae_config(cfg)
        layers, hidden = int(c["num_layers"]), int(c["hidden_dim"])
        dim, kernel = int(c["codebook_dim"]), int(c["kernel_size"])
        pad = (kernel - 1) // 2
        widths = [hidden * 2 ** i for i in range(layers)]
        inner = widths[-1]
        enc: list[nn.Module] = []
        for n_in, n_out in zip([int(c["channels"]), *widths[:-1]], widths):
            enc.append(nn.Sequential(nn.Conv1d(n_in, n_out, kernel, stride=2, padding=pad), nn.ReLU()))
        enc += [ResBlock(inner) for _ in range(int(c["num_resnet_blocks"]))]
        enc.append(nn.Conv1d(inner, dim, 1))
        dec_widths = [inner, *reversed(widths)]
        dec: list[nn.Module] = [nn.Conv1d(dim, inner, 1)]
        dec += [ResBlock(inner) for _ in range(int(c["num_resnet_blocks"]))]
        for n_in, n_out in zip(dec_widths[:-1], dec_widths[1:]):
            dec.append(nn.Sequential(UpsampledConv(n_in, n_out, kernel, 2, pad), nn.ReLU()))
        dec.append(nn.Conv1d(widths[0], int(c["channels"]), 1))
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)
        self.codebook = Quantize(dim, int(c["num_tokens"]))
        self.downsample = 2 ** layers
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "DiscreteVAE":
        """Always eval: the DVAE is a frozen tokenizer."""
        return super().train(False)

    @torch.no_grad()
    def codes(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, 80, T) normalised log-mel → (B, ceil(T / 4)) long codes in [0, num_tokens)."""
        h = self.encoder(mel.to(self.codebook.embed.dtype))
        return self.codebook.nearest(h.transpose(1, 2))

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, N) codes → (B, 80, 4·N) mel (the decoder's reconstruction, for previews)."""
        return self.decoder(self.codebook.lookup(codes.long()).transpose(1, 2))


def tiny_dvae(seed: int = 0) -> DiscreteVAE:
    """The ``tiny`` DVAE, random but seeded, whose codebook columns are its own encoder's outputs on seeded noise
    mels: codes then spread over many ids (a random codebook maps almost every frame to a handful of them)."""
    from audiotrain.models.presets import seeded

    def build() -> DiscreteVAE:
        model = DiscreteVAE("tiny")
        n = model.codebook.embed.size(1)
        noise = torch.randn(1, int(model.cfg["channels"]), n * model.downsample)
        with torch.no_grad():
            frames = model.encoder(noise)[0, :, :n]
            model.codebook.embed.copy_(frames)
            model.codebook.embed_avg.copy_(frames)
        return model

    return seeded(build, seed)
