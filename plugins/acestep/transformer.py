"""``ACEStepTransformer2DModel``: the ACE-Step v1 flow-matching transformer in plain PyTorch.

Shapes (``C = num_attention_heads * attention_head_dim``, 2560 in the release):

* latents ``(B, in_channels=8, max_height=16, T)`` → ``proj_in`` (patch ``(16, 1)``) → ``(B, T, C)``
  (the height is fully collapsed: one token per latent frame);
* conditions: ``[speaker (1) | text (L) | lyrics (Ly)]`` → ``(B, 1+L+Ly, C)`` with a matching mask;
* timestep ``t (B,)`` in ``0..1000`` → 256-ch sinusoid (cos first) → ``timestep_embedder``
  = ``embedded_timestep (B, C)`` → ``t_block`` = ``temb (B, 6C)``;
* ``num_layers`` × :class:`LinearTransformerBlock` → ``final_layer`` (RMSNorm, modulation with
  ``embedded_timestep``, Linear ``C -> p_h*p_w*out_channels``) → unpatchify to
  ``(B, out_channels, 16, output_length)``.

REPA: the hidden state after block ``ssl_encoder_depths[k]`` goes through ``projectors[k]``,
is resampled per sample (linear, ``align_corners=False``) to the teacher length, and
``mean(1 - cos)`` against the teacher features is averaged over the batch.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .lyric_encoder import LyricConformerEncoder
from .presets import PRESETS, TINY, V1_3_5B
from .rope import RotaryEmbedding
from .transformer_block import LinearTransformerBlock, RMSNorm

__all__ = [
    "ACEStepTransformer2DModel",
    "ACEStepTransformerOutput",
    "PRESETS",
    "TINY",
    "V1_3_5B",
    "timestep_sinusoid",
]

TIMESTEP_CHANNELS = 256


def timestep_sinusoid(timesteps: torch.Tensor, dim: int = TIMESTEP_CHANNELS, max_period: float = 10000.0) -> torch.Tensor:
    """``(B,)`` → ``(B, dim)`` float32: ``[cos(t f), sin(t f)]`` with ``f_i = max_period^(-i/(dim/2))``.

    (diffusers ``Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=0)``.)
    """
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    args = timesteps.float()[:, None] * torch.exp(exponent)[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class TimestepEmbedding(nn.Module):
    """``linear_1`` → SiLU → ``linear_2``: ``(B, in) → (B, C)``."""

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class PatchEmbed(nn.Module):
    """``early_conv_layers`` = Conv2d(in → 256·in, k=s=patch) → GroupNorm(32, eps 1e-6) → Conv2d 1×1 → C.

    ``(B, in, H, T)`` → ``(B, (H/p_h)·(T/p_w), C)`` (height-major token order).
    """

    def __init__(self, patch_size: Sequence[int], in_channels: int, embed_dim: int) -> None:
        super().__init__()
        mid = in_channels * 256
        self.early_conv_layers = nn.Sequential(
            nn.Conv2d(in_channels, mid, kernel_size=tuple(patch_size), stride=tuple(patch_size)),
            nn.GroupNorm(32, mid, eps=1e-6, affine=True),
            nn.Conv2d(mid, embed_dim, kernel_size=1, stride=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.early_conv_layers(x).flatten(2).transpose(1, 2)


class FinalLayer(nn.Module):
    """RMSNorm → ``x·(1+scale)+shift`` from ``scale_shift_table (2, C)`` + embedded timestep → ``linear``
    → unpatchify to ``(B, out, p_h·H', output_length)`` (zero-padded or cropped in time)."""

    def __init__(self, dim: int, patch_size: Sequence[int], out_channels: int, height_tokens: int) -> None:
        super().__init__()
        self.patch_size = tuple(patch_size)
        self.out_channels = out_channels
        self.height_tokens = height_tokens
        self.norm_final = RMSNorm(1e-6)
        self.linear = nn.Linear(dim, self.patch_size[0] * self.patch_size[1] * out_channels)
        self.scale_shift_table = nn.Parameter(torch.randn(2, dim) / dim**0.5)

    def unpatchify(self, x: torch.Tensor, output_length: int) -> torch.Tensor:
        b, n, _ = x.shape
        ph, pw = self.patch_size
        h = self.height_tokens
        w = n // h
        x = x.reshape(b, h, w, ph, pw, self.out_channels)
        x = torch.einsum("nhwpqc->nchpwq", x).reshape(b, self.out_channels, h * ph, w * pw)
        width = w * pw
        if width < output_length:
            x = F.pad(x, (0, output_length - width))
        return x[..., :output_length]

    def forward(self, x: torch.Tensor, embedded_timestep: torch.Tensor, output_length: int) -> torch.Tensor:
        shift, scale = (self.scale_shift_table[None] + embedded_timestep[:, None]).chunk(2, dim=1)
        x = self.norm_final(x) * (1 + scale) + shift
        return self.unpatchify(self.linear(x), output_length)


@dataclass
class ACEStepTransformerOutput:
    """``sample (B, out, H, T)`` and ``proj_losses`` = ``[(ssl_name, scalar loss), ...]`` (empty without teachers)."""

    sample: torch.Tensor
    proj_losses: list[tuple[str, torch.Tensor]] = field(default_factory=list)


class ACEStepTransformer2DModel(nn.Module):
    """ACE-Step v1 transformer built from a config dict (the keys of ``ace_step_transformer/config.json``).

    ``inner_dim`` in the config is ignored and recomputed as heads × head_dim. Extra optional
    keys: ``lyric_num_blocks``, ``lyric_attention_heads``, ``lyric_linear_units``,
    ``ssl_projector_dim`` (see :mod:`audiotrain_acestep.presets`). Underscore-prefixed keys are ignored.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        cfg = {k: copy.deepcopy(v) for k, v in dict(config).items() if not k.startswith("_")}
        inner = int(cfg["num_attention_heads"]) * int(cfg["attention_head_dim"])
        cfg["inner_dim"] = inner
        self.config = cfg
        self.inner_dim = inner
        self.patch_size = tuple(int(p) for p in cfg["patch_size"])
        self.out_channels = int(cfg["out_channels"])
        if int(cfg["max_height"]) != self.patch_size[0] or self.patch_size[1] != 1:
            raise ValueError(
                "ACE-Step collapses the latent height into one token per frame: need "
                f"max_height == patch_size[0] and patch_size[1] == 1, got {cfg['max_height']} / {self.patch_size}"
            )
        self.ssl_encoder_depths = [int(d) for d in cfg["ssl_encoder_depths"]]
        self.ssl_names = list(cfg["ssl_names"])
        ssl_dims = [int(d) for d in cfg["ssl_latent_dims"]]
        lyric_size = int(cfg["lyric_hidden_size"])

        self.rotary_emb = RotaryEmbedding(
            int(cfg["attention_head_dim"]), max_position_embeddings=int(cfg["max_position"]), base=float(cfg["rope_theta"])
        )
        self.transformer_blocks = nn.ModuleList(
            LinearTransformerBlock(
                inner,
                int(cfg["num_attention_heads"]),
                int(cfg["attention_head_dim"]),
                mlp_ratio=float(cfg["mlp_ratio"]),
                add_cross_attention=True,
            )
            for _ in range(int(cfg["num_layers"]))
        )
        self.timestep_embedder = TimestepEmbedding(TIMESTEP_CHANNELS, inner)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(inner, 6 * inner))

        self.speaker_embedder = nn.Linear(int(cfg["speaker_embedding_dim"]), inner)
        self.genre_embedder = nn.Linear(int(cfg["text_embedding_dim"]), inner)
        self.lyric_embs = nn.Embedding(int(cfg["lyric_encoder_vocab_size"]), lyric_size)
        self.lyric_encoder = LyricConformerEncoder(
            input_size=lyric_size,
            output_size=lyric_size,
            attention_heads=int(cfg.get("lyric_attention_heads", 16)),
            linear_units=int(cfg.get("lyric_linear_units", 4096)),
            num_blocks=int(cfg.get("lyric_num_blocks", 6)),
        )
        self.lyric_proj = nn.Linear(lyric_size, inner)

        projector_dim = int(cfg.get("ssl_projector_dim", 2 * inner))
        self.projectors = nn.ModuleList(
            nn.Sequential(
                nn.Linear(inner, projector_dim),
                nn.SiLU(),
                nn.Linear(projector_dim, projector_dim),
                nn.SiLU(),
                nn.Linear(projector_dim, dim),
            )
            for dim in ssl_dims
        )
        self.proj_in = PatchEmbed(self.patch_size, int(cfg["in_channels"]), inner)
        self.final_layer = FinalLayer(inner, self.patch_size, self.out_channels, height_tokens=1)
        self.gradient_checkpointing = False

    # ------------------------------------------------------------------ checkpointing
    def enable_gradient_checkpointing(self) -> None:
        """Recompute each transformer block (and each lyric Conformer layer) in backward."""
        self.gradient_checkpointing = True
        self.lyric_encoder.gradient_checkpointing = True

    def disable_gradient_checkpointing(self) -> None:
        self.gradient_checkpointing = False
        self.lyric_encoder.gradient_checkpointing = False

    # ------------------------------------------------------------------ conditions
    def encode(
        self,
        encoder_text_hidden_states: torch.Tensor,
        text_attention_mask: torch.Tensor,
        speaker_embeds: torch.Tensor,
        lyric_token_idx: torch.Tensor,
        lyric_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Build the condition sequence.

        Args: text states ``(B, L, text_embedding_dim)`` and mask ``(B, L)``; speaker
        ``(B, speaker_embedding_dim)``; lyric ids ``(B, Ly)`` long and mask ``(B, Ly)``.
        Returns ``(encoder_hidden_states (B, 1+L+Ly, C), encoder_mask (B, 1+L+Ly))``; the speaker
        token is always valid.
        """
        b = encoder_text_hidden_states.shape[0]
        speaker = self.speaker_embedder(speaker_embeds).unsqueeze(1)
        text = self.genre_embedder(encoder_text_hidden_states)
        lyric, _ = self.lyric_encoder(self.lyric_embs(lyric_token_idx), lyric_mask)
        lyric = self.lyric_proj(lyric)
        states = torch.cat([speaker, text.to(speaker.dtype), lyric.to(speaker.dtype)], dim=1)
        speaker_mask = torch.ones(b, 1, device=speaker.device, dtype=speaker.dtype)
        mask = torch.cat(
            [speaker_mask, text_attention_mask.to(speaker.device, speaker.dtype), lyric_mask.to(speaker.device, speaker.dtype)],
            dim=1,
        )
        return states, mask

    # ------------------------------------------------------------------ denoiser
    def decode(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        encoder_hidden_states: torch.Tensor,
        encoder_hidden_mask: torch.Tensor | None,
        timestep: torch.Tensor,
        ssl_hidden_states: Sequence[Any] | None = None,
        output_length: int | None = None,
    ) -> tuple[torch.Tensor, list[tuple[str, torch.Tensor]]]:
        """Predict the flow velocity.

        Args:
            hidden_states: noisy latents ``(B, in_channels, H, T)``.
            attention_mask: ``(B, T)`` (1 = valid frame) or None (all valid).
            encoder_hidden_states / encoder_hidden_mask: output of :meth:`encode`.
            timestep: ``(B,)`` (or scalar) float in ``0..1000``.
            ssl_hidden_states: optional teacher features, one entry per projector: a tensor
                ``(B, T_ssl, d_k)`` or a per-sample sequence of ``(T_ssl_i, d_k)`` tensors.
            output_length: time length of the returned sample (default ``T``).

        Returns ``(sample (B, out_channels, H, output_length), proj_losses)``.
        """
        b, _, _, t = hidden_states.shape
        output_length = t if output_length is None else int(output_length)
        if attention_mask is None:
            attention_mask = torch.ones(b, t, device=hidden_states.device, dtype=hidden_states.dtype)
        timestep = torch.as_tensor(timestep, device=hidden_states.device)
        if timestep.ndim == 0:
            timestep = timestep.expand(b)

        embedded_timestep = self.timestep_embedder(timestep_sinusoid(timestep).to(hidden_states.dtype))
        temb = self.t_block(embedded_timestep)
        x = self.proj_in(hidden_states)

        freqs = self.rotary_emb(x, seq_len=x.shape[1])
        freqs_cross = self.rotary_emb(encoder_hidden_states, seq_len=encoder_hidden_states.shape[1])

        want_ssl = ssl_hidden_states is not None and len(ssl_hidden_states) > 0
        if want_ssl:
            missing = [d for d in self.ssl_encoder_depths if not 0 <= d < len(self.transformer_blocks)]
            if missing:
                raise ValueError(f"ssl_encoder_depths {missing} outside 0..{len(self.transformer_blocks) - 1}")
        captured: dict[int, torch.Tensor] = {}
        use_ckpt = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for index, block in enumerate(self.transformer_blocks):
            args = (x, encoder_hidden_states, temb, attention_mask, encoder_hidden_mask, freqs, freqs_cross)
            x = checkpoint(block, *args, use_reentrant=False) if use_ckpt else block(*args)
            if want_ssl and index in self.ssl_encoder_depths:
                captured[index] = x

        proj_losses: list[tuple[str, torch.Tensor]] = []
        if want_ssl:
            for depth, projector, teacher, name in zip(self.ssl_encoder_depths, self.projectors, ssl_hidden_states, self.ssl_names):
                proj_losses.append((name, self.repa_loss(projector(captured[depth]), teacher)))

        sample = self.final_layer(x, embedded_timestep, output_length)
        return sample, proj_losses

    @staticmethod
    def repa_loss(projected: torch.Tensor, teacher: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """REPA cosine loss.

        ``projected (B, T, d)`` is resampled per sample to ``T_ssl_i`` (linear, align_corners False),
        both sides are L2-normalised and ``mean_frames(1 - cos)`` is averaged over the batch.
        """
        bs = projected.shape[0]
        total = projected.new_zeros(())
        for i in range(bs):
            z = teacher[i].to(device=projected.device, dtype=projected.dtype)
            z_tilde = F.interpolate(projected[i].transpose(0, 1)[None], size=z.shape[0], mode="linear", align_corners=False)
            z_tilde = F.normalize(z_tilde[0].transpose(0, 1), dim=-1)
            z = F.normalize(z, dim=-1)
            target = torch.ones(z.shape[0], device=z.device, dtype=z.dtype)
            total = total + F.cosine_embedding_loss(z, z_tilde, target)
        return total / bs

    # ------------------------------------------------------------------ both
    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        encoder_text_hidden_states: torch.Tensor,
        text_attention_mask: torch.Tensor,
        speaker_embeds: torch.Tensor,
        lyric_token_idx: torch.Tensor,
        lyric_mask: torch.Tensor,
        timestep: torch.Tensor,
        ssl_hidden_states: Sequence[Any] | None = None,
        output_length: int | None = None,
    ) -> ACEStepTransformerOutput:
        """:meth:`encode` then :meth:`decode`; returns :class:`ACEStepTransformerOutput`."""
        enc, enc_mask = self.encode(encoder_text_hidden_states, text_attention_mask, speaker_embeds, lyric_token_idx, lyric_mask)
        sample, proj_losses = self.decode(
            hidden_states,
            attention_mask,
            enc,
            enc_mask,
            timestep,
            ssl_hidden_states=ssl_hidden_states,
            output_length=output_length,
        )
        return ACEStepTransformerOutput(sample=sample, proj_losses=proj_losses)
