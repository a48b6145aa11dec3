"""SongGen checkpoint folders: save -> load round trip, ignored external encoders, refusals, config.json."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from audiotrain.models.presets import seeded
from audiotrain.models.state_dict import StateDictMismatch
from audiotrain.safe_files import BadFileError
from audiotrain_songgen.checkpoint import (ConfigError, config_json, load_folder, preset_from_config_json,
                                           save_folder)
from audiotrain_songgen.composite import SongGenComposite
from audiotrain_songgen.presets import resolve_config
from tests.ref_keys import ref_keys

V = 1088


@pytest.fixture(scope="module")
def tiny() -> SongGenComposite:
    return seeded(lambda: SongGenComposite("tiny")).eval()


@pytest.fixture()
def saved(tiny, tmp_path):
    return save_folder(tiny, tmp_path / "ckpt")


def _inputs() -> dict:
    g = torch.Generator().manual_seed(3)
    return {"decoder_input_ids": torch.randint(0, V, (2, 8, 6), generator=g),
            "text_hidden": torch.randn(2, 5, 16, generator=g), "text_mask": torch.ones(2, 5),
            "lyrics_ids": torch.randint(0, 7000, (2, 4), generator=g), "lyrics_mask": torch.ones(2, 4),
            "mert_hidden": torch.randn(2, 3, 25, 16, generator=g)}


def _rewrite(folder, change) -> None:
    state = load_file(str(folder / "model.safetensors"))
    change(state)
    save_file(state, str(folder / "model.safetensors"))


def test_save_then_load_is_identical(tiny, saved):
    assert sorted(p.name for p in saved.iterdir()) == ["config.json", "model.safetensors"]
    stored = load_file(str(saved / "model.safetensors"))
    assert "text_encoder.shared.weight" in stored and "text_encoder.encoder.embed_tokens.weight" not in stored
    loaded = load_folder(saved)
    assert loaded.ignored == [] and loaded.config == tiny.cfg
    model = loaded.model
    a, b = tiny.state_dict(), model.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert model.text_encoder.shared.weight is model.text_encoder.encoder.embed_tokens.weight  # tied again
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    table = model.decoder.model.decoder.embed_positions.weights
    assert not table.requires_grad and not any(p.requires_grad for p in model.text_encoder.parameters())
    x = _inputs()
    with torch.no_grad():
        want, got = tiny(**x), model(**x)
    assert torch.equal(want["logits"], got["logits"]) and torch.equal(want["vocal_logits"], got["vocal_logits"])
    half = load_folder(saved, dtype=torch.bfloat16).model
    assert half.decoder.lm_heads[0].weight.dtype == torch.bfloat16


def test_external_encoder_keys_are_ignored_and_counted(saved):
    def add(state):
        state["audio_encoder.x"] = torch.zeros(3)
        state["mert_model.encoder.layers.0.weight"] = torch.zeros(2, 2)
    _rewrite(saved, add)
    loaded = load_folder(saved)
    assert loaded.ignored == ["audio_encoder.x", "mert_model.encoder.layers.0.weight"]


def test_either_name_of_the_tied_t5_embedding_loads(tiny, saved):
    def rename(state):
        state["text_encoder.encoder.embed_tokens.weight"] = state.pop("text_encoder.shared.weight")
    _rewrite(saved, rename)
    model = load_folder(saved).model
    assert torch.equal(model.text_encoder.shared.weight, tiny.text_encoder.shared.weight)
    assert model.text_encoder.shared.weight is model.text_encoder.encoder.embed_tokens.weight


def test_missing_decoder_key_is_one_sentence(saved):
    _rewrite(saved, lambda s: s.pop("decoder.model.decoder.layers.1.fc1.weight"))
    with pytest.raises(StateDictMismatch) as err:
        load_folder(saved, option="model.weights")
    text = str(err.value)
    assert f"model.weights={saved / 'model.safetensors'} does not match" in text
    assert "1 missing keys (e.g. decoder.model.decoder.layers.1.fc1.weight)" in text
    assert "\n" not in text and text.endswith(".")


def test_wrong_shape_and_unknown_key_are_refused(saved):
    def bad(state):
        state["decoder.lm_heads.0.weight"] = torch.zeros(V, 31)
        state["decoder.extra.weight"] = torch.zeros(1)
    _rewrite(saved, bad)
    with pytest.raises(StateDictMismatch, match=r"1 unexpected keys \(e.g. decoder.extra.weight\); 1 shape "
                                                r"mismatches .*decoder.lm_heads.0.weight \[1088, 31\] vs \[1088, 32\]"):
        load_folder(saved)


def test_sharded_folder_loads(tiny, saved):
    state = load_file(str(saved / "model.safetensors"))
    (saved / "model.safetensors").unlink()
    names = sorted(state)
    parts = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
             "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for file, keys in parts.items():
        save_file({k: state[k] for k in keys}, str(saved / file))
    index = {"metadata": {}, "weight_map": {k: f for f, keys in parts.items() for k in keys}}
    (saved / "model.safetensors.index.json").write_text(json.dumps(index))
    model = load_folder(saved).model
    assert torch.equal(model.decoder.lm_heads[3].weight, tiny.decoder.lm_heads[3].weight)


def test_pickle_only_or_bad_folders_are_refused(tmp_path, saved):
    (saved / "model.safetensors").rename(saved / "pytorch_model.bin")
    with pytest.raises(BadFileError, match="pytorch_model.bin .*needs model.safetensors"):
        load_folder(saved)
    with pytest.raises(BadFileError, match="not a folder"):
        load_folder(tmp_path / "nowhere")


def test_config_json_round_trip_and_the_released_config():
    for name in ("tiny", "mixed_pro", "interleaving_A_V"):
        cfg = resolve_config(name)
        data = json.loads(json.dumps(config_json(cfg)))
        assert preset_from_config_json(data) == cfg
        assert data["model_type"] == "songgen" and data["vocab_size"] == 7000
        assert data["text_encoder"]["model_type"] == "t5" and data["decoder"]["model_type"] == "songgen_decoder"
        assert {"prompt_cross_attention", "add_prenet", "text_encoder", "decoder"} <= set(data)
    assert config_json(resolve_config("interleaving_A_V"))["architectures"] == ["SongGenDualTrackForConditionalGeneration"]
    # the reference composite config (the layout of SongGenConfig) is the mixed_pro preset
    assert preset_from_config_json(ref_keys("songgen_mixed_pro_composite_partial")["config"]) == resolve_config("mixed_pro")
    released_decoder = ref_keys("songgen_mixed_pro_decoder")["config"]
    data = {**config_json(resolve_config("mixed_pro")), "decoder": released_decoder}
    data.pop("audiotrain")
    assert preset_from_config_json(data) == resolve_config("mixed_pro")


def test_unsupported_configs_are_refused():
    base = config_json(resolve_config("tiny"))
    for change, what in ((("decoder", "rope_embeddings", True), "rope_embeddings"),
                         (("decoder", "num_key_value_heads", 1), "key/value heads"),
                         ((None, "prompt_cross_attention", False), "prompt_cross_attention")):
        data = json.loads(json.dumps(base))
        group, key, value = change
        (data[group] if group else data)[key] = value
        with pytest.raises(ConfigError, match=what):
            preset_from_config_json(data, source="x/config.json")
    with pytest.raises(ConfigError, match="lacks hidden_size"):
        preset_from_config_json({**base, "decoder": {k: v for k, v in base["decoder"].items() if k != "hidden_size"}})
    with pytest.raises(ConfigError, match="not a SongGen config"):
        preset_from_config_json({"model_type": "t5"})
