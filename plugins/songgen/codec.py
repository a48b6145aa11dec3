"""X-Codec, SongGen's audio tokenizer (transformers' ``XcodecModel``), frozen: 8 codebooks × 1024 at 50 Hz.

16 kHz mono audio, hop 320 (acoustic DAC-style encoder with ratios 8·5·4·2) plus a HuBERT semantic branch;
SongGen uses 4 kbps = 8 residual codebooks (transformers picks ``floor(bandwidth / (log2(1024)·50/1000))``
quantizers, so 4.0 kbps → 8; :func:`bandwidth_for` asks the model itself).

- ``tiny_codec(seed) -> XcodecModel``: random, seeded, no download (the HuBERT sub-model is built from a config):
  the same 16 kHz / hop 320 / 8 × 1024 layout and the same HuBERT conv stack (so the same frame count), tiny
  channels and one transformer layer. Its codebooks are seeded samples of its own pre-quantizer embeddings on
  seeded noise, so codes spread over the codebooks instead of all being 0 (transformers initialises them to 0).
- ``load_codec(folder) -> XcodecModel``: a local transformers folder (``config.json`` + ``model.safetensors``,
  e.g. ``hf-audio/xcodec-hubert-general``), read as data (:mod:`audiotrain.hf_folder`).
- ``tiny_codec_key(seed)`` / ``codec_dir_key(folder)``: cache keys known without building the model.

Frame count (what the model produces, checked for every length in the tests' sweep): the semantic branch pads
the wave by ``hop // 2 = 160`` samples on each side and runs HuBERT's conv stack (kernels 10,3,3,3,3,2,2, strides
5,2,2,2,2,2,2, no padding); the acoustic branch is padded the same way whenever its own count differs. So a
wave of ``N`` samples gives ``T = num_frames(codec, N)``, which for that stack is ``floor((N + 240) / 320)``
(= round-half-down of N/320: 4 s = 64000 → 200; 64079 → 200; 64080 → 201). Waves under 80 samples are refused.

Batching (``encode_batch``): padding cannot give the same codes. HuBERT's first conv layer is followed by a
GroupNorm over the whole time axis and its self-attention sees every frame (``XcodecModel.encode`` passes no
mask), so right zero-padding changes the codes of every frame, not just the last ones. Equality with encoding
each wave alone (as SongGen does, batch 1) is therefore by construction: waves are grouped by exact length and
each group is stacked without any padding (clips cut to a fixed duration share lengths, so they do batch).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from audiotrain.encoders.inputs import real_mono
from audiotrain.encoders.base import stable_hash
from audiotrain.encoders.frozen import FrozenFeature, weights_key
from audiotrain.encoders.lazy import LazyEncoder
from audiotrain.errors import UserError

SAMPLE_RATE = 16000
HOP = 320
FRAME_RATE = 50
NUM_CODEBOOKS = 8
CODEBOOK_SIZE = 1024
CODEC_VERSION = "songgen-xcodec-v1"
CODEC_OPTION = "model.codec_path"
CODEC_EXPECTED = ("a local X-Codec folder in transformers' layout (config.json + model.safetensors, e.g. "
                  "hf-audio/xcodec-hubert-general), or model.preset=tiny for a test run")

#: the tiny codec's sub-configs: DAC-style acoustic model with the real ratios (hop 320), tiny channels
TINY_ACOUSTIC = dict(encoder_hidden_size=2, decoder_hidden_size=16, hidden_size=16, downsampling_ratios=[8, 5, 4, 2],
                     upsampling_ratios=[8, 5, 4, 2], n_codebooks=1, codebook_size=16, codebook_dim=4)
#: tiny HuBERT: the real conv kernels/strides (same frame count), 8 channels, one layer of width 16
TINY_SEMANTIC = dict(model_type="hubert", hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, conv_dim=[8] * 7, conv_kernel=[10, 3, 3, 3, 3, 2, 2],
                     conv_stride=[5, 2, 2, 2, 2, 2, 2], num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                     hidden_dropout=0.0, activation_dropout=0.0, attention_dropout=0.0, feat_proj_dropout=0.0,
                     layerdrop=0.0, apply_spec_augment=False, mask_time_prob=0.0)
TINY_TOP = dict(sample_rate=SAMPLE_RATE, codebook_size=CODEBOOK_SIZE, target_bandwidths=[0.5, 1, 1.5, 2, 4])
_VOLATILE = ("_name_or_path", "transformers_version", "architectures", "_commit_hash", "dtype", "torch_dtype")


def tiny_config() -> Any:
    """The ``XcodecConfig`` of :func:`tiny_codec`."""
    from transformers import XcodecConfig

    return XcodecConfig(acoustic_model_config=dict(TINY_ACOUSTIC), semantic_model_config=dict(TINY_SEMANTIC),
                        **TINY_TOP)


def tiny_codec_key(seed: int = 0) -> str:
    """Cache key of ``tiny_codec(seed)`` (its weights follow from the seed and the config)."""
    return stable_hash(CODEC_VERSION, "tiny", int(seed), TINY_ACOUSTIC, TINY_SEMANTIC, TINY_TOP)


def _check_dir(folder: str | Path) -> Path:
    from audiotrain.hf_folder import check_folder

    return check_folder(folder, option=CODEC_OPTION, expected=CODEC_EXPECTED)


def codec_dir_key(folder: str | Path) -> str:
    """Cache key of an X-Codec folder without loading it: its config and its weight files' fingerprints."""
    from audiotrain.safe_files import read_json

    p = _check_dir(folder)
    config = read_json(p / "config.json", option=CODEC_OPTION, expected=CODEC_EXPECTED)
    config = {k: v for k, v in config.items() if k not in _VOLATILE} if isinstance(config, dict) else config
    files = sorted(p.glob("model*.safetensors")) or sorted(p.glob("pytorch_model*.bin"))
    return weights_key(CODEC_VERSION, config, NUM_CODEBOOKS, files=files)


def bandwidth_for(codec: Any, codebooks: int = NUM_CODEBOOKS) -> float:
    """The configured bandwidth for which the model itself selects ``codebooks`` quantizers (4.0 for 8)."""
    for bw in codec.config.target_bandwidths:
        if codec.quantizer.get_num_quantizers_for_bandwidth(bw) == codebooks:
            return float(bw)
    raise UserError(f"This X-Codec offers no bandwidth with {codebooks} codebooks (it has "
                    f"{list(codec.config.target_bandwidths)} kbps): SongGen needs {NUM_CODEBOOKS} (4 kbps).")


def _check_layout(codec: Any, where: str) -> Any:
    cfg = codec.config
    hop = int(math.prod(cfg.acoustic_model_config.downsampling_ratios))
    if int(cfg.sample_rate) != SAMPLE_RATE or hop != HOP or int(cfg.codebook_size) != CODEBOOK_SIZE:
        raise UserError(f"{where} is an X-Codec at {cfg.sample_rate} Hz with hop {hop} and {cfg.codebook_size} codes "
                        f"per codebook; SongGen needs {SAMPLE_RATE} Hz, hop {HOP} and {CODEBOOK_SIZE}.")
    bandwidth_for(codec)
    return codec.eval().requires_grad_(False)


def _seed_codebooks(model: Any, seed: int) -> None:
    """Fill each codebook with the model's own pre-quantizer embeddings of seeded noise (plus jitter).

    The noise's loudness changes every frame (log-uniform, about -60 to -6 dBFS). The embeddings are caught by
    standing in for ``quantizer.encode`` during one ``encode`` call."""
    gen = torch.Generator().manual_seed(seed)
    n = SAMPLE_RATE
    envelope = torch.empty(4, n // HOP + 1).uniform_(-7.0, -0.7, generator=gen).exp().repeat_interleave(HOP, 1)
    noise = (torch.randn(4, n, generator=gen) * envelope[:, :n]).unsqueeze(1)
    caught: list[torch.Tensor] = []

    def catch(embeddings: torch.Tensor, bandwidth: Any = None) -> torch.Tensor:
        caught.append(embeddings)
        return torch.zeros(NUM_CODEBOOKS, *embeddings.shape[::2], dtype=torch.long)

    model.quantizer.encode = catch
    try:
        with torch.no_grad():
            model.encode(noise, bandwidth=bandwidth_for(model), return_dict=False)
    finally:
        del model.quantizer.encode
    residual = caught[0].transpose(1, 2).reshape(-1, caught[0].shape[1])  # (frames, dim)
    with torch.no_grad():
        for vq in model.quantizer.quantizers:
            book = vq.codebook
            pick = torch.randint(0, residual.shape[0], (CODEBOOK_SIZE,), generator=gen)
            spread = (residual - residual.mean(0)).std().clamp_min(1e-6)
            embed = residual[pick] + torch.randn(book.embed.shape, generator=gen) * spread * 0.1
            book.embed.copy_(embed)
            book.embed_avg.copy_(embed)
            residual = residual - embed[book.quantize(residual)]


def tiny_codec(seed: int = 0) -> Any:
    """A tiny random X-Codec (module doc); same ``seed`` → same weights (the global RNG is left as it was)."""
    from transformers import XcodecModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = XcodecModel(tiny_config()).eval()
    _seed_codebooks(model, int(seed))
    return _check_layout(model, "tiny_codec")


def load_codec(folder: str | Path, trust_pickle: bool = False) -> Any:
    """An X-Codec from a local transformers folder, as data: nothing downloaded, no code from the folder run."""
    from transformers import XcodecModel

    from audiotrain.hf_folder import load_model

    p = _check_dir(folder)
    model = load_model(XcodecModel, p, option=CODEC_OPTION, expected=CODEC_EXPECTED, trust_pickle=trust_pickle)
    return _check_layout(model, f"{CODEC_OPTION}={p}")


def num_frames(codec: Any, num_samples: int) -> int:
    """Frames the codec gives for ``num_samples`` (module doc): HuBERT's conv stack on the wave padded by hop/2
    on each side; ``floor((N + 240) / 320)`` for the standard stack. 0 when the wave is too short."""
    sem = codec.config.semantic_model_config
    length = int(num_samples) + 2 * (HOP // 2)
    for kernel, stride in zip(sem.conv_kernel, sem.conv_stride):
        if length < kernel:
            return 0
        length = (length - kernel) // stride + 1
    return length


def _device(codec: Any) -> torch.device:
    first = next(codec.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _as_wave(wave: Any, i: int) -> torch.Tensor:
    wave = torch.as_tensor(wave, dtype=torch.float32)
    if wave.dim() == 2 and wave.shape[0] == 1:
        wave = wave[0]
    if wave.dim() != 1:
        raise ValueError(f"X-Codec wants mono waves of shape (N,) or (1, N); wave {i} has shape {tuple(wave.shape)}")
    return wave


@torch.no_grad()
def encode_batch(codec: Any, waves: Sequence[Any], max_batch: int = 8) -> list[torch.Tensor]:
    """Mono 16 kHz waves (each (N_i,) or (1, N_i)) → their codes, LongTensor (8, T_i) on the CPU each.

    Exactly the codes of encoding each wave alone: waves of equal length are stacked (``max_batch`` at a time),
    never padded (module doc)."""
    waves = [_as_wave(w, i) for i, w in enumerate(waves)]
    device, bandwidth = _device(codec), bandwidth_for(codec)
    groups: dict[int, list[int]] = {}
    for i, w in enumerate(waves):
        if num_frames(codec, w.numel()) < 1:
            raise ValueError(f"wave {i} has {w.numel()} samples; X-Codec needs at least 80 (5 ms at 16 kHz)")
        groups.setdefault(w.numel(), []).append(i)
    out: list[torch.Tensor | None] = [None] * len(waves)
    for length, idx in groups.items():
        want = num_frames(codec, length)
        for s in range(0, len(idx), max(1, int(max_batch))):
            part = idx[s: s + max(1, int(max_batch))]
            batch = torch.stack([waves[i] for i in part]).unsqueeze(1).to(device)
            codes = codec.encode(batch, bandwidth=bandwidth, return_dict=False)
            if tuple(codes.shape[1:]) != (NUM_CODEBOOKS, want):
                raise RuntimeError(f"X-Codec gave codes {tuple(codes.shape)} for {length} samples; expected "
                                   f"({len(part)}, {NUM_CODEBOOKS}, {want})")
            for j, i in enumerate(part):
                out[i] = codes[j].to("cpu", torch.long).contiguous()
    return out  # type: ignore[return-value]


@torch.no_grad()
def decode(codec: Any, codes: torch.Tensor) -> torch.Tensor:
    """Codes LongTensor (B, 8, T) → float32 waves (B, 1, T * 320) at 16 kHz on the CPU."""
    codes = torch.as_tensor(codes).long()
    if codes.dim() != 3 or codes.shape[1] != NUM_CODEBOOKS:
        raise ValueError(f"X-Codec decode wants codes (B, {NUM_CODEBOOKS}, T), got {tuple(codes.shape)}")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= CODEBOOK_SIZE):
        raise ValueError(f"X-Codec codes must be in [0, {CODEBOOK_SIZE}); strip BOS/EOS/pad ids first")
    audio = codec.decode(codes.to(_device(codec)), return_dict=False)
    return audio.to("cpu", torch.float32).contiguous()


class CodecFeature(FrozenFeature):
    """``example["audio"]`` (1, N) float at 16 kHz, cut to ``example["audio_length"]`` → ``{"codes_<role>": (8, T)}``.

    ``T = num_frames(codec, audio_length)`` (module doc). One feature per stream role (``"mix"``, ``"vocal"``,
    ``"acc"`` …): ``stream`` is that role and ``name`` is ``codes_<role>``."""

    name = "codes_mix"
    stream = "mix"

    def __init__(self, codec: Any, codec_key: str, stream: str = "mix"):
        super().__init__(codec, self.feature_key(codec_key, stream))
        self.stream = stream
        self.name = f"codes_{stream}"

    @staticmethod
    def feature_key(codec_key: str, stream: str) -> str:
        """The feature's cache key from the codec's key (``tiny_codec_key`` / ``codec_dir_key``) and the role."""
        return stable_hash("songgen-codes", stream, codec_key)

    @classmethod
    def lazy_for(cls, stream: str, codec_key: str, build_codec: Callable[[], Any]) -> LazyEncoder:
        """This feature for ``stream`` behind a LazyEncoder; ``build_codec`` runs on first encode (share one
        memoised builder between the streams to load the codec once)."""
        return LazyEncoder(f"codes_{stream}", cls.feature_key(codec_key, stream),
                           lambda: cls(build_codec(), codec_key, stream), stream=stream)

    def features(self, example: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        audio = real_mono(example, "X-Codec")
        return {self.name: encode_batch(self.module, [audio])[0]}  # codes_<role>: one key per stream in a cache row
