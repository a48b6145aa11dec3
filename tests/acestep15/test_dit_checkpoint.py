"""A DiT variant folder (config.json + model.safetensors) loads back bit-exactly with our own code; a wrong
folder, a mis-fitting file or a truncated copy is one sentence."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from audiotrain.errors import UserError
from audiotrain_acestep15.dit_checkpoint import load_dit, save_dit
from tests.acestep15.dit_inputs import conditions, latents, tiny_model


def _one_sentence(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and text.endswith(".")
    return text


def test_a_tiny_folder_loads_back_bit_exactly(tmp_path):
    model = tiny_model(seed=3)
    folder = save_dit(model, tmp_path / "acestep-v15-tiny")
    config = json.loads((folder / "config.json").read_text())
    assert config["hidden_size"] == 64 and config["fsq_input_levels"] == [8, 8, 8, 5, 5, 5]
    assert "encoder_hidden_size" not in config  # a 2B-shaped config, like the released turbo one
    config["auto_map"] = {"AutoModel": "modeling_acestep_v15_turbo.AceStepConditionGenerationModel"}
    (folder / "config.json").write_text(json.dumps(config))  # HF keys are ignored, the modeling file never runs
    (folder / "modeling_acestep_v15_turbo.py").write_text("raise SystemExit('remote code ran')\n")
    loaded = load_dit(folder)
    want, got = model.state_dict(), loaded.state_dict()
    assert list(got) == list(want) and all(torch.equal(want[k], got[k]) for k in want)
    assert loaded.config == model.config
    enc, mask = conditions(model, [(6, 4)])
    x, ctx = latents(1, 10)
    with torch.no_grad():
        assert torch.equal(model.velocity(x, torch.tensor([0.5]), enc, ctx, None, mask),
                           loaded.eval().velocity(x, torch.tensor([0.5]), enc, ctx, None, mask))


def test_bf16_file_loads_in_the_asked_dtype(tmp_path):
    model = tiny_model()
    folder = save_dit(model, tmp_path / "dit", dtype=torch.bfloat16)
    assert load_file(str(folder / "model.safetensors"))["decoder.norm_out.weight"].dtype == torch.bfloat16
    assert load_dit(folder).decoder.proj_in[1].weight.dtype == torch.float32
    assert load_dit(folder, dtype=None).decoder.proj_in[1].weight.dtype == torch.bfloat16


def test_missing_and_unexpected_keys_are_one_sentence(tmp_path):
    folder = save_dit(tiny_model(), tmp_path / "dit")
    state = load_file(str(folder / "model.safetensors"))
    state.pop("decoder.norm_out.weight")
    state["decoder.extra.weight"] = torch.zeros(2)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(UserError) as exc:
        load_dit(folder, option="model.checkpoint_dir")
    text = _one_sentence(exc)
    assert "1 missing keys (e.g. decoder.norm_out.weight)" in text
    assert "1 unexpected keys (e.g. decoder.extra.weight)" in text and "model.checkpoint_dir=" in text


def test_wrong_folders_are_one_sentence(tmp_path):
    with pytest.raises(UserError) as exc:
        load_dit(tmp_path / "nowhere")
    assert "no such folder" in _one_sentence(exc)
    vae = tmp_path / "vae"
    vae.mkdir()
    (vae / "config.json").write_text(json.dumps({"_class_name": "AutoencoderOobleck", "sampling_rate": 48000}))
    (vae / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    with pytest.raises(UserError) as exc:
        load_dit(vae)
    assert "lacks model.safetensors" in _one_sentence(exc)
    text_encoder = tmp_path / "Qwen3-Embedding-0.6B"
    text_encoder.mkdir()
    (text_encoder / "config.json").write_text(json.dumps({"model_type": "qwen3", "hidden_size": 1024}))
    save_file({"w": torch.zeros(1)}, str(text_encoder / "model.safetensors"))
    with pytest.raises(UserError) as exc:
        load_dit(text_encoder)
    assert "holds the config of qwen3, not of the ACE-Step 1.5 DiT" in _one_sentence(exc)
    folder = save_dit(tiny_model(), tmp_path / "cut")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as exc:
        load_dit(folder)
    assert "truncated or damaged safetensors" in _one_sentence(exc)
