"""SongGen model: the released layouts (meta-device builds against the reference key lists), and the tiny model's
shapes, causality, memory masking, gradients, stream embeddings and positions."""
from __future__ import annotations

import math

import pytest
import torch

from audiotrain.models.presets import seeded
from audiotrain_songgen.composite import SongGenComposite
from audiotrain_songgen.decoder import SongGenForCausalLM, sinusoidal_table
from audiotrain_songgen.presets import PRESETS, get_preset, resolve_config
from tests.ref_keys import ref_keys

V = 1088


def _shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())  # a tied tensor once


def test_mixed_pro_matches_the_released_composite_and_decoder():
    comp, dec = ref_keys("songgen_mixed_pro_composite_partial"), ref_keys("songgen_mixed_pro_decoder")
    with torch.device("meta"):
        model = SongGenComposite("mixed_pro")
    ours = _shapes(model)
    assert len(ours) == comp["num_keys"] == 760
    assert set(ours) - set(comp["keys"]) == set() and set(comp["keys"]) - set(ours) == set()
    assert ours == comp["keys"]
    assert _count(model) == comp["num_params"] == 870_728_218
    assert sum(v.numel() for v in model.state_dict().values()) == comp["state_dict_numel"] == 903_627_290
    assert model.text_encoder.shared.weight is model.text_encoder.encoder.embed_tokens.weight  # the tied group
    # the decoder alone is SongGenForCausalLM; the sinusoidal table is a frozen parameter and is counted
    assert _shapes(model.decoder) == dec["keys"] and list(_shapes(model.decoder)) == list(dec["keys"])
    assert _count(model.decoder) == dec["num_params"] == 436_245_504
    table = model.decoder.model.decoder.embed_positions.weights
    assert isinstance(table, torch.nn.Parameter) and not table.requires_grad and list(table.shape) == [6547, 1024]
    assert _count(model.decoder) - table.numel() == 429_541_376
    with torch.device("meta"):
        alone = SongGenForCausalLM(get_preset("mixed_pro")["decoder"])
    assert _shapes(alone) == dec["keys"] and _count(alone) == dec["num_params"]


def test_interleaving_A_V_is_mixed_pro_without_vocal_heads():
    comp, dec = ref_keys("songgen_mixed_pro_composite_partial"), ref_keys("songgen_mixed_pro_decoder")
    with torch.device("meta"):
        model = SongGenComposite("interleaving_A_V")
    want = {k: v for k, v in comp["keys"].items() if ".vocal_lm_heads." not in k}
    assert len(comp["keys"]) - len(want) == 8
    assert _shapes(model) == want
    heads = 8 * V * 1024
    assert _count(model) == comp["num_params"] - heads == 861_815_322
    assert _count(model.decoder) == dec["num_params"] - heads
    assert model.decoder.vocal_lm_heads is None and model.decoder.num_streams == 8


def test_presets_and_overrides():
    assert set(PRESETS) == {"tiny", "mixed_pro", "interleaving_A_V"}
    tiny = resolve_config({"preset": "tiny", "decoder": {"num_hidden_layers": 1}})
    assert tiny["decoder"]["num_hidden_layers"] == 1 and tiny["decoder"]["hidden_size"] == 32
    assert tiny["decoder"]["vocab_size"] == V and tiny["decoder"]["num_codebooks"] == 8
    assert resolve_config("tiny", {"mert": {"hidden_size": 8}})["mert"] == {"hidden_size": 8, "num_layers": 25}
    assert PRESETS["tiny"]["decoder"]["num_hidden_layers"] == 2  # the preset itself is untouched
    with pytest.raises(ValueError, match="unknown keys"):
        resolve_config({"preset": "tiny", "decoder": {"num_layers": 1}})
    with pytest.raises(ValueError, match="track_pattern"):
        resolve_config({"preset": "tiny", "decoder": {"track_pattern": "zigzag"}})
    with pytest.raises(KeyError, match="unknown SongGen preset"):
        get_preset("huge")


@pytest.fixture(scope="module")
def tiny() -> SongGenComposite:
    return seeded(lambda: SongGenComposite("tiny")).eval()


def _inputs(seed: int = 0, b: int = 2, s: int = 7, lt: int = 5, ll: int = 6, tm: int = 4) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "decoder_input_ids": torch.randint(0, V, (b, 8, s), generator=g),
        "text_hidden": torch.randn(b, lt, 16, generator=g), "text_mask": torch.ones(b, lt),
        "lyrics_ids": torch.randint(0, 7000, (b, ll), generator=g), "lyrics_mask": torch.ones(b, ll),
        "mert_hidden": torch.randn(b, tm, 25, 16, generator=g), "voice_mask": torch.ones(b, tm),
    }


def test_forward_shapes_and_memory_layout(tiny):
    x = _inputs()
    out = tiny(**x)
    assert out["logits"].shape == (2, 8, 7, V) and out["vocal_logits"].shape == (2, 8, 7, V)
    assert torch.isfinite(out["logits"]).all()
    memory, mask = tiny.memory(x["text_hidden"], x["text_mask"], x["lyrics_ids"], x["lyrics_mask"],
                               x["mert_hidden"], x["voice_mask"])
    assert memory.shape == (2, 4 + 5 + 6, 32) and mask.shape == (2, 15) and mask.dtype == torch.bool
    # [voice ; description ; lyrics]: the first 4 rows are the voice projection
    assert torch.allclose(memory[:, :4], tiny.voice_states(x["mert_hidden"]))
    assert torch.allclose(memory[:, 9:], tiny.lyrics_states(x["lyrics_ids"], x["lyrics_mask"]))
    no_voice, m2 = tiny.memory(x["text_hidden"], x["text_mask"], x["lyrics_ids"], x["lyrics_mask"])
    assert no_voice.shape == (2, 11, 32) and torch.allclose(no_voice, memory[:, 4:])


def test_text_ids_path_equals_cached_t5_states(tiny):
    x = _inputs()
    ids = torch.randint(2, 384, (2, 5))
    att = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    states = tiny.text_states(ids, att)
    assert states.shape == (2, 5, 16) and torch.all(states[1, 3:] == 0)
    del x["text_hidden"], x["text_mask"]
    a = tiny(**x, input_ids=ids, attention_mask=att)["logits"]
    b = tiny(**x, text_hidden=states, text_mask=att)["logits"]
    assert torch.allclose(a, b, atol=1e-6)


def test_causal(tiny):
    x = _inputs()
    base = tiny(**x)["logits"]
    t = 4
    x["decoder_input_ids"][:, :, t] = (x["decoder_input_ids"][:, :, t] + 1) % V
    changed = tiny(**x)["logits"]
    assert torch.equal(base[:, :, :t], changed[:, :, :t])
    assert not torch.allclose(base[:, :, t:], changed[:, :, t:])


def test_fully_masked_voice_equals_no_voice(tiny):
    """By construction: a masked memory position gets exactly zero attention weight."""
    x = _inputs()
    x["voice_mask"] = torch.zeros(2, 4)
    masked = tiny(**x)["logits"]
    absent = tiny(**{**x, "mert_hidden": None, "voice_mask": None})["logits"]
    assert torch.isfinite(masked).all()
    assert torch.allclose(masked, absent, atol=1e-5, rtol=1e-5)
    x["voice_mask"] = torch.ones(2, 4)
    assert (tiny(**x)["logits"] - absent).abs().max() > 1e-5  # a real voice does change them


def test_padded_memory_does_not_change_the_result(tiny):
    x = _inputs(b=1, lt=4, ll=5)
    ref = tiny(**x)["logits"]
    g = torch.Generator().manual_seed(7)
    padded = dict(x)
    padded["text_hidden"] = torch.cat([x["text_hidden"], 50 * torch.randn(1, 3, 16, generator=g)], 1)
    padded["text_mask"] = torch.cat([x["text_mask"], torch.zeros(1, 3)], 1)
    padded["lyrics_ids"] = torch.cat([x["lyrics_ids"], torch.randint(0, 7000, (1, 4), generator=g)], 1)
    padded["lyrics_mask"] = torch.cat([x["lyrics_mask"], torch.zeros(1, 4)], 1)
    padded["mert_hidden"] = torch.cat([x["mert_hidden"], torch.randn(1, 2, 25, 16, generator=g)], 1)
    padded["voice_mask"] = torch.cat([x["voice_mask"], torch.zeros(1, 2)], 1)
    out = tiny(**padded)["logits"]
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5)


def test_entirely_masked_memory_is_finite_and_the_mean_of_values(tiny):
    x = _inputs()
    zeros = {"text_mask": torch.zeros(2, 5), "lyrics_mask": torch.zeros(2, 6), "voice_mask": torch.zeros(2, 4)}
    out = tiny(**{**x, **zeros})
    assert torch.isfinite(out["logits"]).all() and torch.isfinite(out["vocal_logits"]).all()
    attn = tiny.decoder.model.decoder.layers[0].encoder_attn
    mem, q = torch.randn(1, 3, 32), torch.randn(1, 2, 32)
    got = attn(q, mem, torch.ones(1, 1, 1, 3, dtype=torch.bool), empty=torch.tensor([True]))
    want = attn.out_proj(attn.v_proj(mem).mean(1, keepdim=True).expand(1, 2, 32))
    assert torch.allclose(got, want, atol=1e-6)


def test_decoder_padding_mask_keeps_valid_steps(tiny):
    x = _inputs(b=1, s=6)
    ref = tiny(**x)["logits"]
    out = tiny(**x, decoder_attention_mask=torch.tensor([[1, 1, 1, 1, 0, 0]]))["logits"]
    assert torch.allclose(out[:, :, :4], ref[:, :, :4], atol=1e-6) and torch.isfinite(out).all()


def test_gradient_reaches_every_trainable_part():
    model = seeded(lambda: SongGenComposite("tiny")).train()
    out = model(**_inputs())
    (out["logits"].float().pow(2).mean() + out["vocal_logits"].float().pow(2).mean()).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    for name in ("decoder.model.decoder.embed_tokens.0.weight", "decoder.model.decoder.layers.1.fc2.weight",
                 "decoder.model.decoder.layers.0.encoder_attn.k_proj.weight", "decoder.lm_heads.7.weight",
                 "decoder.vocal_lm_heads.0.weight", "enc_to_dec_proj.weight", "embed_prompts.weight",
                 "lyrics_encoder.encoders.1.self_attn.pos_bias_u", "lyrics_encoder.embed.out.0.weight",
                 "lyrics_to_dec_proj.bias", "mert_layer_agg.weight", "audio_mert_to_dec_proj.weight"):
        assert grads[name] is not None and grads[name].abs().sum() > 0, name
    assert all(g is None for n, g in grads.items() if n.startswith("text_encoder."))  # frozen
    assert grads["decoder.model.decoder.embed_positions.weights"] is None
    assert not model.text_encoder.training  # kept in eval (no dropout) while the rest trains


def test_gradient_checkpointing_gives_the_same_gradients():
    def grads(checkpointed: bool) -> dict[str, torch.Tensor]:
        model = seeded(lambda: SongGenComposite({"preset": "tiny", "decoder": {"dropout": 0.0},
                                                 "lyrics_encoder": {"dropout_rate": 0.0,
                                                                    "positional_dropout_rate": 0.0}})).train()
        model.enable_gradient_checkpointing(checkpointed)
        model(**_inputs())["logits"].pow(2).mean().backward()
        return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    plain, ckpt = grads(False), grads(True)
    assert plain.keys() == ckpt.keys() and "lyrics_encoder.encoders.0.feed_forward.w_1.weight" in plain
    assert all(torch.allclose(plain[n], ckpt[n], atol=1e-7) for n in plain)


def test_summed_embeddings_8_streams_and_halved_16():
    dec = seeded(lambda: SongGenForCausalLM(get_preset("tiny")["decoder"])).model.decoder
    ids = torch.randint(0, V, (2, 8, 5))
    want = sum(dec.embed_tokens[i](ids[:, i]) for i in range(8))
    assert torch.equal(dec.embed(ids), want)
    cfg = resolve_config({"preset": "tiny", "decoder": {"track_pattern": "parallel_std"}})["decoder"]
    par = seeded(lambda: SongGenForCausalLM(cfg))
    assert par.num_streams == 16 and len(par.lm_heads) == 16 and len(par.model.decoder.embed_tokens) == 16
    ids16 = torch.randint(0, V, (2, 16, 5))
    want16 = sum(par.model.decoder.embed_tokens[i](ids16[:, i]) for i in range(16)) / 2
    assert torch.allclose(par.model.decoder.embed(ids16), want16, atol=1e-7)
    out = par(ids16, torch.randn(2, 3, 32), torch.ones(2, 3))
    assert out["logits"].shape == (2, 16, 5, V) and out["vocal_logits"].shape == (2, 8, 5, V)
    with pytest.raises(ValueError, match="16 streams"):
        par(ids)


def test_sinusoidal_positions_formula():
    table = sinusoidal_table(10, 8)  # half 4: f_j = 10000 ** (-j / 3)
    for p in (0, 3, 9):
        for j in range(4):
            f = 10000.0 ** (-j / 3)
            assert table[p, j].item() == pytest.approx(math.cos(p * f), abs=1e-6)
            assert table[p, 4 + j].item() == pytest.approx(math.sin(p * f), abs=1e-6)
    dec = seeded(lambda: SongGenForCausalLM(get_preset("tiny")["decoder"]))
    assert torch.equal(dec.model.decoder.embed_positions.weights, sinusoidal_table(6547, 32))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        dec.model.decoder.embed_positions(6548)


def test_without_prenet_the_lyrics_skip_the_conformer():
    model = seeded(lambda: SongGenComposite({"preset": "tiny", "add_prenet": False})).eval()
    assert model.lyrics_encoder is None and not any(k.startswith("lyrics_encoder.") for k in model.state_dict())
    x = _inputs()
    want = model.lyrics_to_dec_proj(model.embed_prompts(x["lyrics_ids"]))
    assert torch.allclose(model.lyrics_states(x["lyrics_ids"], x["lyrics_mask"]), want)
    assert model(**x)["logits"].shape == (2, 8, 7, V)
