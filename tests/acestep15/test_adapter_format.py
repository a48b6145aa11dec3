"""ACE-Step 1.5's adapter files from the tiny DiT: the PEFT folder loads the way ACE-Step 1.5 loads it
(``PeftModel.from_pretrained`` on a bare decoder) and plays the trained output at scale 1.0; ``lokr_weights.safetensors``
carries the header ACE-Step 1.5 reads, LyCORIS keys and LyCORIS' scale rule, and reads back bit for bit; the
ComfyUI file plays the trained weights at strength 1.0 under ComfyUI's alpha/rank rule; reading is strict."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from audiotrain.errors import UserError
from audiotrain.lora import adapter as lora_adapter
from audiotrain.lora.adapter import LoRASettings
from audiotrain_acestep15 import adapter_format, comfyui_file
from tests.acestep15.dit_inputs import conditions, latents, tiny_model

PROJ = ("q_proj", "k_proj", "v_proj", "o_proj")


def _targets(model) -> list[str]:
    return [f"decoder.layers.{i}.{a}.{p}" for i in range(model.config.num_hidden_layers)
            for a in ("self_attn", "cross_attn") for p in PROJ]


def _adapted(algo: str, r: int = 4, alpha: float = 8, **extra):
    """The tiny DiT with a random adapter attached (PEFT starts one factor at zero), and its settings."""
    model = tiny_model(seed=0)
    settings = LoRASettings(r=r, alpha=alpha, target_modules=_targets(model), algo=algo, **extra)
    lora_adapter.attach(model, settings)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model, settings


def _velocity(model) -> torch.Tensor:
    states, _ = conditions(model, [(5, 4)])
    xt, context = latents(1, 8)
    t = torch.tensor([0.6])
    with torch.no_grad():
        return model.decoder(xt, t, t, states, context)


def _decoder_inputs(model):
    states, _ = conditions(model, [(5, 4)])
    xt, context = latents(1, 8)
    return xt, torch.tensor([0.6]), states, context


def test_lora_folder_loads_into_a_bare_decoder_as_ace_step_15_loads_it(tmp_path):
    from peft import PeftModel

    model, settings = _adapted("lora")
    want = _velocity(model)
    folder = adapter_format.save_native(model, settings, tmp_path)
    assert folder == tmp_path / "adapter"
    config = json.loads((folder / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"]) == ("LORA", 4, 8)
    assert sorted(config["target_modules"]) == sorted(PROJ)
    keys = set(load_file(str(folder / "adapter_model.safetensors")))
    layers = model.config.num_hidden_layers
    assert keys == {f"base_model.model.layers.{i}.{a}.{p}.lora_{ab}.weight" for i in range(layers)
                    for a in ("self_attn", "cross_attn") for p in PROJ for ab in "AB"}
    bare = tiny_model(seed=0).decoder  # the same base weights, no adapter
    xt, t, states, context = _decoder_inputs(model)
    with torch.no_grad():
        plain = bare(xt, t, t, states, context)
        loaded = PeftModel.from_pretrained(bare, str(folder))
        # the decoder inside PEFT's wrapper, its layers now LoRA layers (the generation model calls it so)
        got = loaded.get_base_model()(xt, t, t, states, context)
    assert not torch.allclose(plain, want, atol=1e-3)  # the adapter changes the output
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6), float((got - want).abs().max())


def _lycoris_delta(factors: dict, alpha: float) -> torch.Tensor:
    """A layer's weight update by LyCORIS' rule: kron(w1, w2) × alpha / r when a factor is low-rank, else × 1."""
    w1 = factors["lokr_w1"] if "lokr_w1" in factors else factors["lokr_w1_a"] @ factors["lokr_w1_b"]
    w2 = factors["lokr_w2"] if "lokr_w2" in factors else factors["lokr_w2_a"] @ factors["lokr_w2_b"]
    rank = factors["lokr_w2_b"].shape[0] if "lokr_w2_a" in factors else \
        factors["lokr_w1_b"].shape[0] if "lokr_w1_a" in factors else None
    return torch.kron(w1, w2) * (alpha / rank if rank else 1.0)


@pytest.mark.parametrize("r", [2, 16])  # r 2: low-rank second factors; r 16: every factor a full matrix
def test_lokr_file_has_ace_step_15_header_lycoris_keys_and_round_trips_bit_for_bit(tmp_path, r):
    model, settings = _adapted("lokr", r=r, alpha=2 * r)
    state = lora_adapter.adapter_state(model)
    path = adapter_format.save_native(model, settings, tmp_path)
    assert path == tmp_path / "lokr_weights.safetensors"
    with safe_open(str(path), "pt") as f:
        header = f.metadata()
    assert (header["algo"], header["format"]) == ("lokr", "lycoris")
    cfg = json.loads(header["lokr_config"])
    assert (cfg["linear_dim"], cfg["linear_alpha"], cfg["factor"], cfg["decompose_both"]) == (r, 2 * r, -1, False)
    assert sorted(cfg["target_modules"]) == sorted(PROJ)
    tensors = load_file(str(path))
    stems = {k.rpartition(".")[0] for k in tensors}
    assert stems == {adapter_format.lycoris_stem(n[len("decoder."):]) for n in _targets(model)}
    assert all(s.startswith("lycoris_layers_") for s in stems)
    low_rank = 0
    for n in _targets(model):  # LyCORIS' scale rule on the file's tensors = PEFT's trained update
        stem = adapter_format.lycoris_stem(n[len("decoder."):])
        factors = {k.rpartition(".")[2]: v for k, v in tensors.items() if k.rpartition(".")[0] == stem}
        low_rank += "lokr_w2_a" in factors
        peft = model.get_submodule(n).get_delta_weight("default")
        assert torch.allclose(_lycoris_delta(factors, float(factors["alpha"])), peft, rtol=1e-5, atol=1e-7)
    assert (low_rank > 0) == (r == 2)
    again_settings, again = adapter_format.load_native(tmp_path, _targets(model))
    assert again.keys() == state.keys() and all(torch.equal(again[k], state[k]) for k in state)
    assert (again_settings.algo, again_settings.r, again_settings.alpha) == ("lokr", r, 2 * r)
    fresh = tiny_model(seed=0)
    lora_adapter.attach(fresh, again_settings)
    lora_adapter.load_adapter_state(fresh, again)
    assert torch.equal(_velocity(fresh), _velocity(model))


@pytest.mark.parametrize("algo", ["lora", "lokr"])
def test_comfyui_file_plays_the_trained_weights_at_strength_one(tmp_path, algo):
    model, settings = _adapted(algo, r=4, alpha=8)
    adapter_format.save_native(model, settings, tmp_path)
    tensors = load_file(str(tmp_path / comfyui_file.FILENAME))
    prefix = "diffusion_model.decoder.layers."
    assert all(k.startswith(prefix) for k in tensors)
    for n in _targets(model):
        layer = model.get_submodule(n)
        trained = layer.get_delta_weight("default")
        if algo == "lora":  # ComfyUI: strength × alpha / rank × up @ down
            down, up = tensors[f"diffusion_model.{n}.lora_down.weight"], tensors[f"diffusion_model.{n}.lora_up.weight"]
            delta = float(tensors[f"diffusion_model.{n}.alpha"]) / down.shape[0] * (up @ down)
        else:
            factors = {k.rpartition(".")[2]: v for k, v in tensors.items() if k.rpartition(".")[0] == f"diffusion_model.{n}"}
            delta = _lycoris_delta(factors, float(factors["alpha"]))
        assert torch.allclose(delta, trained, rtol=1e-5, atol=1e-7), n
    settings_back, state = comfyui_file.load(tmp_path, _targets(model))
    want = lora_adapter.adapter_state(model)
    assert state.keys() == want.keys() and all(torch.equal(state[k], want[k]) for k in want)
    assert (settings_back.algo, settings_back.r, settings_back.alpha) == (algo, 4, 8)


def test_reading_is_strict_about_missing_and_unexpected_keys(tmp_path):
    model, settings = _adapted("lora")
    adapter_format.save_native(model, settings, tmp_path / "ok")
    targets = _targets(model)
    weights = tmp_path / "ok" / "adapter" / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    first = next(iter(sorted(tensors)))
    save_file({k: v for k, v in tensors.items() if k != first}, str(weights))
    with pytest.raises(UserError, match=f"lacks {first}"):
        adapter_format.load_native(tmp_path / "ok", targets)
    save_file({**tensors, "base_model.model.layers.0.mlp.up_proj.lora_A.weight": torch.zeros(4, 8)}, str(weights))
    with pytest.raises(UserError, match="unexpected key base_model.model.layers.0.mlp.up_proj.lora_A.weight"):
        adapter_format.load_native(tmp_path / "ok", targets)
    comfy = tmp_path / "ok" / comfyui_file.FILENAME
    ct = load_file(str(comfy))
    save_file({k: v for k, v in ct.items() if not k.endswith("layers.0.self_attn.q_proj.alpha")}, str(comfy))
    with pytest.raises(UserError, match="lacks diffusion_model.decoder.layers.0.self_attn.q_proj.alpha"):
        comfyui_file.load(comfy, targets)
    model, settings = _adapted("lokr", r=2, alpha=4)
    path = adapter_format.save_native(model, settings, tmp_path / "lokr")
    lt = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        header = f.metadata()
    save_file({k: v for k, v in lt.items() if not k.endswith("layers_0_cross_attn_v_proj.lokr_w1")}, str(path), header)
    with pytest.raises(UserError, match="lacks lycoris_layers_0_cross_attn_v_proj.lokr_w1"):
        adapter_format.load_native(path, targets)
    save_file({**lt, "lycoris_layers_0_mlp_up_proj.lokr_w1": torch.zeros(2, 2)}, str(path), header)
    with pytest.raises(UserError, match="unexpected key lycoris_layers_0_mlp_up_proj.lokr_w1"):
        adapter_format.load_native(path, targets)
