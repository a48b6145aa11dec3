"""SongGen's KV cache: cached decoding equals the uncached decoder position by position (logits within 1e-5) and
cached sampling draws the same tokens for the same seed, for every track pattern, with a voice memory, with LoRA
attached, and through the backbone."""
from __future__ import annotations

import pytest
import torch

from audiotrain.lora.adapter import LoRASettings, attach
from audiotrain.models.presets import seeded
from audiotrain_songgen import patterns as P
from audiotrain_songgen.backbone import DECODER_TARGETS, SongGenBackbone
from audiotrain_songgen.composite import SongGenComposite
from audiotrain_songgen.generate import max_len_for, sample
from audiotrain_songgen.kv_cache import KVCache, LayerCache
from audiotrain_songgen.presets import resolve_config

K = 8
TOL = 1e-5
#: the step sizes fed to the cache: a 3-position prefill, then single steps and a 2-position chunk mid-way
CHUNKS = (3, 1, 2, 1)


def _model(pattern: str) -> SongGenComposite:
    cfg = resolve_config({"preset": "tiny", "decoder": {"track_pattern": pattern,
                                                        "add_vocal_loss": pattern == "mixed_pro"}})
    return seeded(lambda: SongGenComposite(cfg), 0).eval()


def _memory(model: SongGenComposite, batch: int = 2, seed: int = 1, voice: bool = False) -> dict:
    g = torch.Generator().manual_seed(seed)
    d = int(model.cfg["text_encoder"]["d_model"])
    lt, ll = 5, 7
    text_mask = torch.ones(batch, lt)
    text_mask[1:, -2:] = 0  # the second prompt is shorter: padded memory positions
    lyrics_mask = torch.ones(batch, ll, dtype=torch.bool)
    lyrics_mask[1:, -3:] = False
    mem = {"text_hidden": torch.randn(batch, lt, d, generator=g), "text_mask": text_mask,
           "lyrics_ids": torch.randint(2, 200, (batch, ll), generator=g), "lyrics_mask": lyrics_mask}
    if voice:
        voice_mask = torch.ones(batch, 4, dtype=torch.bool)
        voice_mask[1:] = False  # the second sample's reference voice is silent: never attended to
        mem |= {"mert_hidden": torch.randn(batch, 4, 25, int(model.cfg["mert"]["hidden_size"]), generator=g),
                "voice_mask": voice_mask}
    return mem


def _gens(batch: int, seed: int = 10) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed + i) for i in range(batch)]


def _chunks(length: int) -> list[int]:
    sizes, i = [], 0
    while sum(sizes) < length:
        sizes.append(min(CHUNKS[i % len(CHUNKS)], length - sum(sizes)))
        i += 1
    return sizes


def _cached_logits(model: SongGenComposite, seq: torch.Tensor, memory, mask) -> dict[str, torch.Tensor]:
    """Logits of every position of ``seq [B, N, L]`` fed to a cache chunk by chunk (see CHUNKS)."""
    cache = KVCache(len(model.decoder.decoder.layers))
    outs, start = [], 0
    for size in _chunks(seq.shape[-1]):
        assert cache.length == start
        outs.append(model.decoder(seq[..., start:start + size], memory, mask, cache=cache))
        start += size
    assert cache.length == seq.shape[-1]
    joined = {"logits": torch.cat([o["logits"] for o in outs], dim=2)}
    if outs[0]["vocal_logits"] is not None:
        joined["vocal_logits"] = torch.cat([o["vocal_logits"] for o in outs], dim=2)
    return joined


def _check_equivalent(model: SongGenComposite, mem: dict, pattern: str, frames: int) -> torch.Tensor:
    """Cached and uncached sampling give equal tokens; the cached logits of those tokens, step by step, are
    the uncached forward's within TOL. Returns the tokens."""
    b = mem["text_hidden"].shape[0]
    plain = sample(model, **mem, pattern=pattern, max_frames=frames, generator=_gens(b), use_cache=False)
    cached = sample(model, **mem, pattern=pattern, max_frames=frames, generator=_gens(b))
    assert cached.shape == plain.shape and torch.equal(cached, plain)
    assert cached.shape[-1] > 2 * K  # long enough to pass the delay and several cached steps
    with torch.no_grad():
        memory, mask = model.memory(**mem)
        full = model.decoder(plain, memory, mask)
        steps = _cached_logits(model, plain, memory, mask)
    for name, want in steps.items():
        assert want.shape == full[name].shape
        err = (want - full[name]).abs().amax(dim=(0, 1, 3))  # worst error per position
        assert float(err.max()) < TOL, f"{name}: position {int(err.argmax())} differs by {float(err.max()):.2e}"
    assert float(full["logits"].std()) > 0.05  # real logits, not a constant the two paths trivially share
    return plain


@pytest.mark.parametrize("pattern", P.PATTERNS)
def test_cached_generation_is_the_uncached_one_for_every_pattern(pattern):
    model = _model(pattern)
    tokens = _check_equivalent(model, _memory(model), pattern, frames=10)
    assert tokens.shape[:2] == (2, P.streams(pattern, K))
    forced = P.pattern_mask(2, K, max_len_for(10, K, pattern), pattern)[..., :tokens.shape[-1]]
    assert torch.equal(tokens[forced != P.FREE], forced[forced != P.FREE])  # the delay pattern is kept


def test_a_voice_memory_with_a_silent_reference_is_cached_the_same():
    model = _model("mixed_pro")
    _check_equivalent(model, _memory(model, voice=True), "mixed_pro", frames=10)


@pytest.mark.parametrize("pattern", ["mixed_pro", "interleaving_A_V"])
def test_lora_layers_are_inside_the_cached_keys_and_values(pattern):
    model = _model(pattern)
    mem = _memory(model)
    with torch.no_grad():
        memory, mask = model.memory(**mem)
    seq = sample(model, **mem, pattern=pattern, max_frames=10, generator=_gens(2), use_cache=False)
    with torch.no_grad():
        before = model.decoder(seq, memory, mask)["logits"]
    attach(model, LoRASettings(r=4, alpha=8, target_modules=list(DECODER_TARGETS)))
    g = torch.Generator().manual_seed(7)
    wrapped = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)  # B starts at zero: make the adapter matter
                wrapped += "self_attn.k_proj" in name or "encoder_attn.v_proj" in name
    assert wrapped == 2 * len(model.decoder.decoder.layers)
    with torch.no_grad():
        after = model.decoder(seq, memory, mask)["logits"]
    assert float((after - before).abs().max()) > 1e-2
    _check_equivalent(model, mem, pattern, frames=10)


def test_the_backbone_samples_with_the_cache_by_default():
    model = _model("parallel_A_V")
    bb = SongGenBackbone(model, pattern="parallel_A_V", add_vocal_loss=False, max_new_frames=5).eval()
    cond = _memory(model)
    default = bb.generate_tokens(cond, seed=3)
    assert torch.equal(default, bb.generate_tokens(cond, seed=3, use_cache=False))
    assert default.shape[:2] == (2, 2 * K)


def test_the_cache_grows_past_its_capacity_and_keeps_every_position():
    layer = LayerCache(capacity=2)
    g = torch.Generator().manual_seed(0)
    cols = [torch.randn(1, 2, n, 4, generator=g) for n in (1, 2, 3, 1)]
    for c in cols:
        k, v = layer.append(c, -c)
    assert layer.length == 7 and k.shape == (1, 2, 7, 4)
    assert torch.equal(k, torch.cat(cols, dim=2)) and torch.equal(v, -k)


def test_a_cache_refuses_key_padding_and_a_wrong_offset():
    model = _model("mixed")
    mem = _memory(model)
    memory, mask = model.memory(**mem)
    ids = torch.full((2, K, 1), P.BOS)
    layers = len(model.decoder.decoder.layers)
    with pytest.raises(ValueError, match="attention_mask"):
        model.decoder(ids, memory, mask, attention_mask=torch.ones(2, 1), cache=KVCache(layers))
    cache = KVCache(layers)
    model.decoder(ids, memory, mask, cache=cache)
    with pytest.raises(ValueError, match="position_offset=5 disagrees with the 1 positions"):
        model.decoder(ids, memory, mask, position_offset=5, cache=cache)
    with pytest.raises(ValueError, match="1 layers, the decoder 2"):
        model.decoder(ids, memory, mask, cache=KVCache(1))
