"""``model.prompt_variants=K``: the feature cache holds K prompts per song (tags reshuffled, a recaption picked,
as ACE-Step's dataset draws on every load); each training step draws one from (seed, step, example), so the same
step draws the same after a resume; evaluation and samples use the song's own prompt (variant 0), which is the
one prompt of K=1, bit for bit."""
from __future__ import annotations

import random

import torch

from audiotrain.plugins import registry
from audiotrain.train.data_setup import load_data
from audiotrain.train.model_setup import build_model
from audiotrain.train.module import TrainModule
from audiotrain_acestep.prompts import choose, prompt_from_tags, prompt_variants
from audiotrain_acestep.text_encoder import TextEncoder, TextEncoderFeature

TAGS = ["pop", "piano", "female vocal", "120 bpm", "happy"]
RECAPTION = {"simplified": "a bright pop song with piano", "abstract": "sunny"}


def test_variant_zero_is_the_single_prompt_and_the_others_differ():
    one = prompt_from_tags(TAGS, RECAPTION, random.Random("song_a"))
    many = prompt_variants(TAGS, RECAPTION, "song_a", 8)
    assert many[0] == one and len(many) == 8
    assert len(set(many)) >= 3  # reshuffles and recaptions, as the original draws them
    assert many == prompt_variants(TAGS, RECAPTION, "song_a", 8)  # deterministic: the cache can hold them
    assert prompt_variants(TAGS, RECAPTION, "song_b", 8) != many


def test_k_prompts_encode_each_as_alone_and_choose_trims_to_its_length():
    enc = TextEncoder.tiny(seed=3, max_length=64)
    example = {"key": "song_a", "prompt": prompt_from_tags(TAGS, RECAPTION, random.Random("song_a")),
               "tags": TAGS, "recaption": RECAPTION}
    single = TextEncoderFeature(enc, 1).encode(example)
    feats = TextEncoderFeature(enc, 4).encode(example)
    assert feats["text_hidden"].dim() == 3 and feats["text_hidden"].shape[0] == 4
    first = choose(feats, None)
    assert torch.equal(first["text_hidden"], single["text_hidden"]) and torch.equal(first["text_mask"], single["text_mask"])
    prompts = prompt_variants(TAGS, RECAPTION, "song_a", 4)
    for j, p in enumerate(prompts):
        alone = TextEncoderFeature(enc, 1).encode({"prompt": p})
        rng = _rng_for(j, 4)
        got = choose(feats, rng)
        assert torch.equal(got["text_hidden"], alone["text_hidden"]) and torch.equal(got["text_mask"], alone["text_mask"])
    assert TextEncoderFeature(enc, 4).cache_key() != TextEncoderFeature(enc, 1).cache_key()
    assert feats["text_hidden"] is not first["text_hidden"]  # the cached features are never changed


def _rng_for(j: int, k: int) -> random.Random:
    """A Random whose first randrange(k) is j."""
    seed = 0
    while random.Random(seed).randrange(k) != j:
        seed += 1
    return random.Random(seed)


def test_training_steps_draw_reproducibly_and_evaluation_takes_the_first(tiny_cfg, tmp_path):
    plugin = registry.get("acestep")
    cfg = tiny_cfg("model.prompt_variants=4")
    loaded = load_data(cfg, plugin, tmp_path / "run", "cpu", save_report=False)
    model = build_model(cfg, plugin, report=False)
    module = TrainModule(model.backbone, plugin, cfg, loaded.encoders, None, adapter_only=model.adapter_only)
    ds = loaded.train
    cached = ds[0]["features"]
    assert cached["text_hidden"].shape[0] == 4

    def drawn(step: int) -> torch.Tensor:
        return module.features([ds[0]], salt=step * 64, vary=True)["text_hidden"][0]

    assert torch.equal(drawn(5), drawn(5))  # the same step draws the same (a resumed run too)
    seen = {tuple(drawn(s).flatten()[:8].tolist()) for s in range(24)}
    variants = {tuple(choose(cached, _rng_for(j, 4))["text_hidden"].flatten()[:8].tolist()) for j in range(4)}
    assert seen <= variants and len(seen) >= 2
    first = module.features([ds[0]], salt=5)["text_hidden"][0]
    want = choose(cached, None)["text_hidden"]
    assert torch.equal(first[: want.shape[0]], want)

    # K=1 caches one prompt, and that prompt's features are variant 0 of K=4
    cfg1 = tiny_cfg("model.prompt_variants=1")
    single = load_data(cfg1, plugin, tmp_path / "run1", "cpu", save_report=False).train[0]["features"]
    assert single["text_hidden"].dim() == 2 and torch.equal(single["text_hidden"], want)


def test_a_bad_count_is_one_sentence(tiny_cfg):
    plugin = registry.get("acestep")
    for bad in ("0", "2.5", "true", "100"):
        problems = plugin.validate(tiny_cfg(f"model.prompt_variants={bad}"))
        assert any(p.startswith(f"model.prompt_variants={'True' if bad == 'true' else bad} must be") for p in problems), problems
