"""MERT-v1, SongGen's reference-voice encoder (``m-a-p/MERT-v1-330M``), frozen, built as transformers' ``HubertModel``.

The original loads MERT with ``trust_remote_code``; audiotrain never runs code from a model folder. MERT-v1 is a
HuBERT: a conv feature encoder (7 layers, kernels 10,3,3,3,3,2,2, strides 5,2,2,2,2,2,2: hop 320, 75 frames a
second at 24 kHz), a feature projection, a conv positional embedding and a transformer encoder. So its folder's
``config.json`` (MERT's field names, ``model_type: mert_model``) is mapped onto a ``HubertConfig``
(:func:`hubert_config`) and its weights are loaded strictly into that ``HubertModel``. A config that needs what
HuBERT cannot express (``feature_extractor_cqt: true``, MERT's CQT input branch; ``deepnorm: true``) is refused
with one sentence, as is a MERT for another sample rate (MERT-v0 is 16 kHz).

- ``MertEncoder.from_dir(folder)``: ``config.json`` + ``model.safetensors`` (or ``pytorch_model.bin`` read with
  ``torch.load(weights_only=True)``), read as data; the keys must be exactly the model's (one sentence naming the
  missing / unexpected ones). Two differences are not mismatches: the positional conv's weight-norm tensors of
  older saves (``weight_g`` / ``weight_v``) are today's ``parametrizations.weight.original0/1``, and
  ``masked_spec_embed`` (SpecAugment's training-only vector) is not used at inference, so it is neither built
  nor required.
- ``MertEncoder.tiny(seed)``: a tiny random HuBERT of the same layout (width 16, 24 layers so 25 states, 8
  conv channels with the real kernels and strides, so the real frame count), seeded: the same every run.
- ``mert_dir_key(folder)`` / ``tiny_mert_key(seed)``: cache keys known without building the model.

Input (:func:`normalise`, the ``Wav2Vec2FeatureExtractor`` MERT ships with: ``do_normalize``, right padding with
0, ``return_attention_mask``): the real samples of a crop made zero-mean and unit-variance (variance + 1e-7),
then zero-padded to exactly 3 s = 72,000 samples. Output (:meth:`MertEncoder.states`): all hidden states stacked,
``[B, T, num_hidden_layers + 1, hidden]`` — the input of the first layer, then every layer's output, the last one
after the encoder's final LayerNorm when the blocks are pre-norm (what transformers 4.43, the version SongGen pins,
returns as ``hidden_states``; later versions return that last state before the norm, so the last state is taken
from ``last_hidden_state``). ``T = floor((72000 - 400) / 320) + 1 = 224`` for 3 s. No attention mask is given to
MERT: a crop shorter than 3 s is zero-padded and run whole, as the original pads it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from audiotrain.encoders.base import stable_hash
from audiotrain.encoders.frozen import weights_key
from audiotrain.safe_files import BadFileError, first_line, where

SAMPLE_RATE = 24000
CROP_SECONDS = 3
CROP_SAMPLES = SAMPLE_RATE * CROP_SECONDS
MERT_VERSION = "songgen-mert-v1"
MERT_OPTION = "model.mert_path"
MERT_EXPECTED = ("a local m-a-p/MERT-v1-330M folder (config.json + model.safetensors or pytorch_model.bin), or "
                 "model.voice=false to train without a voice prompt")
#: model_type values of a folder this builds (MERT's own, and a plain transformers HuBERT of the same layout)
MODEL_TYPES = ("mert_model", "hubert")
#: MERT's architecture fields as config.json names them, with MERTConfig's defaults for the ones it leaves out
MERT_FIELDS: dict[str, Any] = dict(
    hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, hidden_act="gelu",
    layer_norm_eps=1e-5, feat_extract_norm="group", feat_extract_activation="gelu", conv_dim=[512] * 7,
    conv_stride=[5, 2, 2, 2, 2, 2, 2], conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_bias=False,
    num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16, do_stable_layer_norm=False,
    feat_proj_layer_norm=True, conv_pos_batch_norm=False)
#: MERT settings HuBERT cannot express, with the only value it can, and what they are
UNSUPPORTED: dict[str, tuple[Any, str]] = {
    "feature_extractor_cqt": (False, "MERT's CQT input branch"),
    "deepnorm": (False, "DeepNorm's scaled residuals"),
}
#: frozen inference: no dropout, no LayerDrop, no SpecAugment (so no masked_spec_embed either)
INFERENCE: dict[str, Any] = dict(hidden_dropout=0.0, activation_dropout=0.0, attention_dropout=0.0,
                                 feat_proj_dropout=0.0, final_dropout=0.0, layerdrop=0.0, apply_spec_augment=False,
                                 mask_time_prob=0.0, mask_feature_prob=0.0)
#: the tiny MERT: pre-norm blocks and a layer-normed conv stack, the real kernels and strides (the real frame count)
TINY_MERT: dict[str, Any] = {**MERT_FIELDS, "hidden_size": 16, "num_hidden_layers": 24, "num_attention_heads": 2,
                             "intermediate_size": 32, "conv_dim": [8] * 7, "num_conv_pos_embeddings": 16,
                             "num_conv_pos_embedding_groups": 4, "feat_extract_norm": "layer",
                             "do_stable_layer_norm": True}
_WEIGHT_NORM = {"encoder.pos_conv_embed.conv.weight_g": "encoder.pos_conv_embed.conv.parametrizations.weight.original0",
                "encoder.pos_conv_embed.conv.weight_v": "encoder.pos_conv_embed.conv.parametrizations.weight.original1"}
_UNUSED = ("masked_spec_embed",)


def frames_for(samples: int, conv_kernel=MERT_FIELDS["conv_kernel"], conv_stride=MERT_FIELDS["conv_stride"]) -> int:
    """Frames the conv stack gives for ``samples`` (no padding: 72,000 → 224); 0 when it is too short."""
    length = int(samples)
    for kernel, stride in zip(conv_kernel, conv_stride):
        if length < kernel:
            return 0
        length = (length - int(kernel)) // int(stride) + 1
    return length


def normalise(wave: torch.Tensor, length: int | None = None, size: int = CROP_SAMPLES) -> torch.Tensor:
    """One crop as MERT's feature extractor gives it: its first ``length`` samples (default: all) zero-mean and
    unit-variance (``(x - mean) / sqrt(var + 1e-7)``), the rest zeros, cut or padded to ``size`` (float32)."""
    wave = torch.as_tensor(wave, dtype=torch.float32).reshape(-1)[:size]
    n = wave.numel() if length is None else max(0, min(int(length), wave.numel()))
    out = torch.zeros(size, dtype=torch.float32)
    if n:
        real = wave[:n].double()
        out[:n] = ((real - real.mean()) / torch.sqrt(real.var(unbiased=False) + 1e-7)).float()
    return out


def _mapped(config: Mapping[str, Any], shown: str) -> dict[str, Any]:
    """MERT's config.json → ``HubertConfig`` fields, or one sentence for what HuBERT cannot express."""
    got = config.get("model_type")
    if got not in MODEL_TYPES:
        raise BadFileError(f"{shown} holds a {got or 'untyped'} model (config.json model_type), not MERT "
                           f"(mert_model); pass {MERT_EXPECTED}.")
    for key, (ok, what) in UNSUPPORTED.items():
        if key in config and config[key] != ok:
            raise BadFileError(f"{shown} sets {key}: {str(config[key]).lower()} in config.json ({what}), which "
                               f"transformers' HubertModel cannot express: pass a MERT-v1 folder with {key}: "
                               f"{str(ok).lower()} (m-a-p/MERT-v1-330M has it), or model.voice=false.")
    rate = config.get("sample_rate", SAMPLE_RATE)
    if rate != SAMPLE_RATE:
        raise BadFileError(f"{shown} is a MERT for {rate} Hz audio (config.json sample_rate); SongGen's voice prompt "
                           f"is {SAMPLE_RATE} Hz MERT-v1: pass {MERT_EXPECTED}.")
    return {key: config.get(key, default) for key, default in MERT_FIELDS.items()}


def hubert_config(fields: Mapping[str, Any], shown: str = "the MERT config") -> Any:
    """The inference ``HubertConfig`` of mapped MERT fields (one sentence when transformers refuses them)."""
    from transformers import HubertConfig

    try:
        return HubertConfig(**dict(fields), **INFERENCE)
    except Exception as exc:  # transformers' own validation errors (strict dataclass checks) or bad value types
        raise BadFileError(f"{shown}'s config.json does not describe a HuBERT ({first_line(exc.__cause__ or exc)}); "
                           f"pass {MERT_EXPECTED}.") from None


def _check_dir(folder: str | Path) -> Path:
    from audiotrain.hf_folder import check_folder

    return check_folder(folder, option=MERT_OPTION, expected=MERT_EXPECTED)


def read_fields(folder: str | Path) -> dict[str, Any]:
    """A MERT folder's mapped architecture fields, checked to make a ``HubertConfig`` (config.json only: no
    weights read)."""
    from audiotrain.safe_files import read_json

    p = _check_dir(folder)
    config = read_json(p / "config.json", option=MERT_OPTION, expected=MERT_EXPECTED)
    if not isinstance(config, Mapping):
        raise BadFileError(f"{where(MERT_OPTION, p / 'config.json')} is not a JSON object; pass {MERT_EXPECTED}.")
    fields = _mapped(config, where(MERT_OPTION, p))
    hubert_config(fields, where(MERT_OPTION, p))
    return fields


def mert_dir_key(folder: str | Path) -> str:
    """Cache key of a MERT folder without loading it: its mapped config and its weight files' fingerprints."""
    p = _check_dir(folder)
    files = sorted(p.glob("model*.safetensors")) or sorted(p.glob("pytorch_model*.bin"))
    return weights_key(MERT_VERSION, read_fields(p), files=files)


def tiny_mert_key(seed: int = 0) -> str:
    """Cache key of ``MertEncoder.tiny(seed)`` (its weights follow from the seed and the config)."""
    return stable_hash(MERT_VERSION, "tiny", int(seed), TINY_MERT)


def _weights(folder: Path, trust_pickle: bool) -> dict[str, torch.Tensor]:
    """The folder's state dict, read as data (safetensors, shards merged; or a weights-only torch.load)."""
    from audiotrain.hf_folder import read_weights
    from audiotrain.safe_files import load_safetensors, read_json

    state = read_weights(folder, option=MERT_OPTION, expected=MERT_EXPECTED, trust_pickle=trust_pickle)
    if state is not None:
        return state
    if (folder / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        index = read_json(folder / "model.safetensors.index.json", option=MERT_OPTION, expected=MERT_EXPECTED)
        files = sorted(set((index.get("weight_map") or {}).values()))
    out: dict[str, torch.Tensor] = {}
    for name in files:
        out.update(load_safetensors(folder / name, option=MERT_OPTION, expected=MERT_EXPECTED))
    return out


def _renamed(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {_WEIGHT_NORM.get(k, k): v for k, v in state.items() if k not in _UNUSED}


class MertEncoder:
    """Frozen MERT (a ``HubertModel``) and SongGen's way of running it (module doc); ``key`` is its cache key."""

    def __init__(self, model: Any, key: str):
        self.model = model.eval().requires_grad_(False)
        self.key = key

    @classmethod
    def from_dir(cls, folder: str | Path, trust_pickle: bool = False) -> "MertEncoder":
        """Load a MERT folder as data, strictly (module doc)."""
        from transformers import HubertModel

        from audiotrain.models.state_dict import load_strict

        p = _check_dir(folder)
        shown = where(MERT_OPTION, p)
        config = hubert_config(read_fields(p), shown)  # read_fields checked it: this cannot fail now
        try:
            model = HubertModel(config)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise BadFileError(f"{shown}'s config.json does not describe a HuBERT ({first_line(exc)}); pass "
                               f"{MERT_EXPECTED}.") from None
        state = _renamed(_weights(p, trust_pickle))
        load_strict(model, state, shown, "the HuBERT its config.json describes", f"pass {MERT_EXPECTED}")
        return cls(model, mert_dir_key(p))

    @classmethod
    def tiny(cls, seed: int = 0) -> "MertEncoder":
        """The tiny random MERT; same ``seed`` → same weights (the global RNG is left as it was)."""
        from transformers import HubertModel

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            model = HubertModel(hubert_config(TINY_MERT))
        return cls(model, tiny_mert_key(seed))

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def num_states(self) -> int:
        """Stacked hidden states: the layers + 1 (25 for MERT-v1-330M)."""
        return int(self.model.config.num_hidden_layers) + 1

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: Any) -> "MertEncoder":
        self.model.to(device)
        return self

    def frames(self, samples: int = CROP_SAMPLES) -> int:
        c = self.model.config
        return frames_for(samples, c.conv_kernel, c.conv_stride)

    @torch.no_grad()
    def states(self, inputs: torch.Tensor) -> torch.Tensor:
        """Normalised crops ``[B, N]`` (:func:`normalise`) → all hidden states ``[B, T, layers + 1, hidden]``,
        float32 on the CPU (module doc: the last one after the final norm of pre-norm blocks)."""
        x = torch.as_tensor(inputs, dtype=torch.float32).to(self.device)
        out = self.model(x, output_hidden_states=True, return_dict=True)
        stacked = torch.stack([*out.hidden_states[:-1], out.last_hidden_state], dim=2)
        if stacked.shape[2] != self.num_states:
            raise RuntimeError(f"MERT gave {stacked.shape[2]} hidden states; expected {self.num_states}")
        return stacked.to("cpu", torch.float32)

    def cache_key(self) -> str:
        return self.key
