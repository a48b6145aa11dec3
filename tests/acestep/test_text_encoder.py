"""UMT5 text encoder wrapper, its feature seam and prompt construction (ACE-Step v1)."""
from __future__ import annotations

import random

import pytest
import torch

from audiotrain_acestep.prompts import prompt_from_tags
from audiotrain_acestep.text_encoder import TextEncoder, TextEncoderFeature


@pytest.fixture(scope="module")
def enc() -> TextEncoder:
    return TextEncoder.tiny(seed=0)


def test_tiny_encode_shapes_and_mask(enc):
    hidden, mask = enc.encode_prompts(["hi", "pop, rock"])
    # byte tokenizer: len(utf-8 bytes) + </s>
    assert hidden.shape == (2, 10, 32) and mask.shape == (2, 10)
    assert mask.dtype == torch.float32
    assert mask.sum(dim=1).tolist() == [3.0, 10.0]
    assert enc.tokenizer(["hé"])["input_ids"][0] == [ord("h") + 3, 0xC3 + 3, 0xA9 + 3, 1]
    assert not hidden.requires_grad


def test_tiny_is_deterministic(enc):
    state = torch.random.get_rng_state()
    other = TextEncoder.tiny(seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    a, _ = enc.encode_prompts(["hello", "x"])
    b, _ = other.encode_prompts(["hello", "x"])
    assert torch.equal(a, b)
    assert enc.cache_key() == other.cache_key()
    diff = TextEncoder.tiny(seed=1)
    assert not torch.equal(a, diff.encode_prompts(["hello", "x"])[0])
    assert diff.cache_key() != enc.cache_key()


def test_truncation_at_max_length(enc):
    hidden, mask = enc.encode_prompts(["x" * 600])
    assert hidden.shape == (1, 256, 32) and mask.sum().item() == 256.0
    hidden, _ = enc.encode_prompts(["x" * 600], max_length=16)
    assert hidden.shape == (1, 16, 32)


def test_from_dir_round_trip(enc, tmp_path):
    enc.save_pretrained(tmp_path)
    loaded = TextEncoder.from_dir(tmp_path)
    prompts = ["a song", "electronic, dance, 120 bpm"]
    h1, m1 = enc.encode_prompts(prompts)
    h2, m2 = loaded.encode_prompts(prompts)
    assert torch.equal(h1, h2) and torch.equal(m1, m2)
    assert loaded.cache_key() == enc.cache_key()


def test_missing_dir_message(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        TextEncoder.from_dir(tmp_path / "umt5-base")
    assert "UMT5 text encoder not found" in str(err.value)
    assert "config.json, model.safetensors and tokenizer.json" in str(err.value)


def test_text_feature(enc):
    feat = TextEncoderFeature(enc)
    assert feat.name == "text" and feat.stream is None
    out = feat.encode({"prompt": "rock"})
    assert out["text_hidden"].shape == (5, 32) and out["text_hidden"].dtype == torch.float32
    assert out["text_mask"].tolist() == [1.0] * 5
    batch, _ = enc.encode_prompts(["rock"])
    assert torch.equal(out["text_hidden"], batch[0])
    assert feat.cache_key() == TextEncoderFeature(TextEncoder.tiny(seed=0)).cache_key()


def test_prompt_from_tags():
    assert prompt_from_tags([], {}, random.Random(0)) == "music"
    assert prompt_from_tags(["", " "], None, random.Random(0)) == "music"
    tags = ["pop", "rock", "female vocals"]
    out = prompt_from_tags(tags, {}, random.Random(0))
    expected = list(tags)
    random.Random(0).shuffle(expected)
    assert out == ", ".join(expected)
    assert tags == ["pop", "rock", "female vocals"]
    seen = {prompt_from_tags(["a"], {"short": "a calm song", "empty": "", "n": 3}, random.Random(s))
            for s in range(50)}
    assert seen == {"a", "a calm song"}
    assert len(prompt_from_tags(["x" * 300], {}, random.Random(0))) == 256
    assert prompt_from_tags("pop, rock", {}, random.Random(1)) in {"pop, rock", "rock, pop"}
