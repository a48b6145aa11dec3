"""The ACE-Step 1.5 parts a run builds from its config: the DiT, the frozen encoders whose outputs are cached once
(the VAE posterior; the text encoder's prompt and lyric features with the condition encoder's outputs) and the
silence latent of the context.

Where the weights come from (``model.preset`` = ``model.variant``):

- ``tiny``: random weights (seeded: the same in every run) at CPU size, the three parts consistent — the DiT's
  ``text_hidden_dim`` is the tiny Qwen3's width (32) and its latent width the tiny VAE's (8).
- ``turbo`` / ``base`` / ``sft`` / ``xl-*``: a released ``model.checkpoint_dir`` (ACE-Step 1.5's ``checkpoints/``):
  ``acestep-v15-<variant>/`` (or ``model.dit_folder``), ``vae/`` and ``Qwen3-Embedding-0.6B/``, read as data
  (safetensors; ``silence_latent.pt`` with ``weights_only``); nothing is downloaded and no folder's code runs.

The condition features are what ACE-Step 1.5's LoRA preprocessing stores (spec §3 items 5-6): the condition encoder
run once per song with the timbre input zeros ``[1, 1, timbre_hidden_dim]`` (the original's LoRA mode; never the
target latents, which its "lokr" mode leaks). The prompts are the inference template (:mod:`.prompts`), with the
song's decoded length as its duration, so training and generation read the same text.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from audiotrain.data.streams import MAIN
from audiotrain.encoders.base import stable_hash
from audiotrain.encoders.frozen import FrozenFeature, weights_key
from audiotrain.errors import UserError
from audiotrain.models.presets import TINY_SEED, require_preset, seeded

from .dit_config import PRESETS, DiTConfig, preset_config
from .features import VaePosteriorFeature
from .prompts import LYRIC_MAX_TOKENS, TEXT_MAX_TOKENS, SongText
from .readers import SAMPLE_RATE
from .tiny_text import tiny_qwen3_config
from .vae import VAE_PRESETS

#: latent frames the silence latent covers (ACE-Step 1.5's ``silence_latent.pt``: 600 s at 25 frames/s)
SILENCE_FRAMES = 15000
DIT_FOLDERS = {"turbo": "acestep-v15-turbo", "base": "acestep-v15-base", "sft": "acestep-v15-sft",
               "xl-base": "acestep-v15-xl-base", "xl-sft": "acestep-v15-xl-sft", "xl-turbo": "acestep-v15-xl-turbo"}
#: the tiny text encoder's caps: its tokenizer spells a byte per token (no merges), about 4x Qwen's BPE count
#: (lyrics within the tiny Qwen3's 4096 positions)
TINY_TEXT_CAPS = (4 * TEXT_MAX_TOKENS, min(4 * LYRIC_MAX_TOKENS, 4096))
VAE_FOLDER, TEXT_FOLDER = "vae", "Qwen3-Embedding-0.6B"
EXPECTED_ROOT = ("ACE-Step 1.5's checkpoints/ folder (acestep-v15-<variant>/, vae/, Qwen3-Embedding-0.6B/) "
                 "in model.checkpoint_dir")


def preset_name(cfg: Any) -> str:
    return require_preset(cfg.model.preset, PRESETS)


def tiny_overrides() -> dict[str, int]:
    """The tiny DiT's widths that must agree with the tiny VAE and the tiny Qwen3 (derived from them)."""
    latent = VAE_PRESETS["tiny"].latent_channels
    return {"audio_acoustic_hidden_dim": latent, "in_channels": 3 * latent, "timbre_hidden_dim": latent,
            "text_hidden_dim": int(tiny_qwen3_config().hidden_size)}


@dataclass(frozen=True)
class Folders:
    dit: Path
    vae: Path
    text: Path


def folders(cfg: Any) -> Folders:
    """The three released folders of a run (one sentence naming what is missing)."""
    m = cfg.model
    if not m.get("checkpoint_dir"):
        raise UserError(f"model.preset={m.preset} loads the released weights, but model.checkpoint_dir is not set: "
                        f"pass {EXPECTED_ROOT}, or model.preset=tiny for a CPU run without weights.")
    root = Path(str(m.checkpoint_dir)).expanduser()
    if not root.is_dir():
        raise UserError(f"model.checkpoint_dir={m.checkpoint_dir} is not a folder: pass {EXPECTED_ROOT}.")
    dit = Path(str(m.dit_folder)).expanduser() if m.get("dit_folder") else root / DIT_FOLDERS[preset_name(cfg)]
    if not dit.is_absolute() and not dit.exists():
        dit = root / dit
    out = Folders(dit=dit, vae=root / VAE_FOLDER, text=root / TEXT_FOLDER)
    lacks = [str(p) for p in (out.dit, out.vae, out.text) if not p.is_dir()]
    if lacks:
        raise UserError(f"model.checkpoint_dir={m.checkpoint_dir} lacks {', '.join(lacks)}: pass {EXPECTED_ROOT} "
                        f"(model.dit_folder= names another DiT folder, e.g. acestep-v15-turbo-shift1).")
    return out


def dit_config(cfg: Any) -> DiTConfig:
    """The DiT's config: the preset's (tiny: consistent with the tiny VAE/Qwen3), or the released folder's."""
    name = preset_name(cfg)
    if name == "tiny":
        return preset_config("tiny", **tiny_overrides())
    if cfg.model.get("checkpoint_dir"):
        from .dit_checkpoint import read_dit_config

        return read_dit_config(folders(cfg).dit, "model.checkpoint_dir")
    return preset_config(name)


def _files(folder: Path, pattern: str) -> list[Path]:
    return sorted(folder.glob(pattern))


def _dit_weights(folder: Path) -> list[Path]:
    return _files(folder, "model*.safetensors") + [folder / "config.json"]


# ---- the DiT and the silence latent --------------------------------------------------------------------------

def build_dit(cfg: Any, device: str = "cpu"):
    """The DiT with its weights (tiny: seeded random; released: the folder's, strictly); on ``meta``: layout only."""
    from .dit import AceStepConditionGenerationModel

    config = dit_config(cfg)
    if device == "meta":
        return AceStepConditionGenerationModel(config)
    if preset_name(cfg) == "tiny":
        return seeded(lambda: AceStepConditionGenerationModel(config))
    from .dit_checkpoint import load_dit

    return load_dit(folders(cfg).dit, option="model.checkpoint_dir")


def silence_latent(cfg: Any, vae_factory) -> torch.Tensor:
    """``(frames, latent)`` float32: the latent of silence the context starts from. Released: the DiT folder's
    ``silence_latent.pt`` (stored ``[1, 64, 15000]``, read as data). Tiny: the VAE's posterior mean of 2 s of
    zeros, whose middle frame (away from the convolutions' edges) is repeated over ``SILENCE_FRAMES``."""
    if preset_name(cfg) == "tiny":
        vae = vae_factory()
        mean, _ = vae.encode_posterior(torch.zeros(2, 2 * SAMPLE_RATE))
        return mean[mean.shape[0] // 2].float().expand(SILENCE_FRAMES, -1).clone()
    from audiotrain.safe_files import load_torch

    path = folders(cfg).dit / "silence_latent.pt"
    data = load_torch(path, option="model.checkpoint_dir", expected="the DiT folder's silence_latent.pt",
                      trust_pickle=bool(cfg.get("trust_pickle", False)))
    width = dit_config(cfg).audio_acoustic_hidden_dim
    if not isinstance(data, torch.Tensor) or data.dim() != 3 or data.shape[:2] != (1, width):
        shape = list(data.shape) if isinstance(data, torch.Tensor) else type(data).__name__
        raise UserError(f"{path} holds {shape}, not the silence latent [1, {width}, frames]; copy the file from the "
                        f"released DiT folder.")
    return data[0].transpose(0, 1).float().contiguous()


def load_condition_encoder(cfg: Any):
    """The released folder's condition encoder alone: only its ``encoder.*`` tensors are read (608 M of the 2B
    file's 2.4 G parameters), strictly (missing, unexpected or mis-shaped keys are one sentence)."""
    from safetensors import safe_open

    from audiotrain.models.state_dict import load_strict
    from audiotrain.safe_files import BadFileError, check_file

    from .condition_encoder import AceStepConditionEncoder

    folder = folders(cfg).dit
    config = dit_config(cfg)
    shards = [p for p in _files(folder, "model*.safetensors")]
    if not shards:
        raise BadFileError(f"model.checkpoint_dir: {folder} has no model.safetensors; pass {EXPECTED_ROOT}.")
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        check_file(shard, option="model.checkpoint_dir", expected="the DiT's model.safetensors")
        try:
            with safe_open(str(shard), framework="pt") as fh:
                for key in fh.keys():
                    if key.startswith("encoder."):
                        state[key[len("encoder."):]] = fh.get_tensor(key).float()
        except Exception as exc:  # safetensors' own error types for a damaged header
            raise BadFileError(f"model.checkpoint_dir: {shard} is not a readable safetensors file ({exc}); pass a "
                               f"complete copy of the released DiT folder.") from None
    with torch.device("meta"):
        encoder = AceStepConditionEncoder(config)
    load_strict(encoder, state, f"model.checkpoint_dir: {folder}", "the condition encoder its config.json describes",
                "give the folder of one released variant with its own config.json", assign=True)
    return encoder


# ---- frozen encoders -------------------------------------------------------------------------------------------

def make_vae(cfg: Any):
    """The frozen VAE (tiny: seeded random; released: ``vae/``)."""
    from .vae import build_vae

    if preset_name(cfg) == "tiny":
        return build_vae("tiny", seed=TINY_SEED).eval().requires_grad_(False)
    from .vae_files import load_vae

    return load_vae(folders(cfg).vae, option="model.checkpoint_dir")


def make_text_encoder(cfg: Any):
    from .text_encoder import Qwen3TextEncoder

    if preset_name(cfg) == "tiny":
        return Qwen3TextEncoder.tiny(seed=TINY_SEED, text_max_length=TINY_TEXT_CAPS[0],
                                     lyric_max_length=TINY_TEXT_CAPS[1])
    return Qwen3TextEncoder.from_dir(folders(cfg).text, option="model.checkpoint_dir")


class ConditionParts:
    """The text encoder and the DiT's condition encoder, moved together (what :class:`ConditionFeature` runs)."""

    def __init__(self, text, encoder) -> None:
        self.text = text
        self.encoder = encoder.eval().requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return self.text.device

    def to(self, device: Any) -> "ConditionParts":
        self.text.to(device)
        self.encoder.to(device)
        return self


class ConditionFeature(FrozenFeature):
    """One song's condition: the Qwen3 features of the inference template (caption and metas; lyrics) through the
    condition encoder → ``encoder_hidden_states (L, enc_H)`` / ``encoder_attention_mask (L,)`` (lyric + 1 timbre +
    text positions, valid first; all ones for one song), the only text the decoder reads and what ACE-Step 1.5's
    ``.pt`` files hold (the Qwen3 features themselves are not kept). Reads the main stream only for the song's
    duration (its decoded length, which is what the model hears)."""

    name = "condition"
    stream = MAIN

    def __init__(self, parts: ConditionParts, key: str, timbre_width: int):
        super().__init__(parts, key)
        self.timbre_width = int(timbre_width)

    def features(self, example: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        parts: ConditionParts = self.module
        seconds = int(example.get("audio_length", 0)) / SAMPLE_RATE
        song = SongText.from_mapping(example, duration=seconds)
        text = parts.text.encode_songs([song])
        dev = parts.device
        dtype = next(parts.encoder.parameters()).dtype
        states, mask = parts.encoder(
            text["text_hidden"].to(dev, dtype), text["text_mask"].to(dev),
            text["lyric_embeds"].to(dev, dtype), text["lyric_mask"].to(dev),
            torch.zeros(1, 1, self.timbre_width, device=dev, dtype=dtype),  # LoRA preprocessing: no reference
            torch.zeros(1, dtype=torch.long, device=dev))
        return {"encoder_hidden_states": states[0].to("cpu", torch.float32),
                "encoder_attention_mask": mask[0].to("cpu", torch.long)}


def build_encoders(cfg: Any) -> list:
    """The two cached features, behind lazy encoders whose keys are known without loading any model."""
    name = preset_name(cfg)
    config = dit_config(cfg)
    chunk, overlap = float(cfg.model.vae_chunk_seconds), float(cfg.model.vae_overlap_seconds)
    if name == "tiny":
        vae_key = stable_hash("acestep15-tiny-vae", TINY_SEED, VAE_PRESETS["tiny"].to_json())
        text_key = stable_hash("acestep15-tiny-qwen3", TINY_SEED, tiny_qwen3_config().to_dict(), TINY_TEXT_CAPS)
        dit_key = stable_hash("acestep15-tiny-dit", TINY_SEED, config.to_json())
    else:
        f = folders(cfg)
        vae_key = weights_key("acestep15-vae", files=_files(f.vae, "*.safetensors") + [f.vae / "config.json"])
        text_key = weights_key("acestep15-qwen3", files=_files(f.text, "*.safetensors") + _files(f.text, "tokenizer*"))
        dit_key = weights_key("acestep15-dit", files=_dit_weights(f.dit))
    latents_key = stable_hash("acestep15-posterior", vae_key, chunk, overlap)
    cond_key = stable_hash("acestep15-condition", text_key, dit_key, "timbre-zeros", "inference-template-v1",
                           "encoder-outputs-only")

    def latents() -> VaePosteriorFeature:
        return VaePosteriorFeature(make_vae(cfg), chunk_seconds=chunk, overlap_seconds=overlap, key=latents_key)

    def condition() -> ConditionFeature:
        encoder = build_dit(cfg).encoder if name == "tiny" else load_condition_encoder(cfg)
        return ConditionFeature(ConditionParts(make_text_encoder(cfg), encoder), cond_key, config.timbre_hidden_dim)

    return [VaePosteriorFeature.lazy(latents_key, latents), ConditionFeature.lazy(cond_key, condition)]
