"""An exported ACE-Step adapter plays at its trained strength in ACE-Step's own loading path, and reads back.

ACE-Step's pipeline loads ``<dir>/pytorch_lora_weights.safetensors`` with diffusers' ``load_lora_adapter(file,
prefix=None)``: the diffusers it ships reads only the tensors, builds ``LoraConfig(r, lora_alpha=r)`` (no
rsLoRA) with the adapted modules' names as targets, and ``set_weights_and_activate_adapters([lora_weight])``
sets each layer's scale to ``lora_weight · alpha / r``. :func:`load_like_acestep` does exactly that with PEFT;
newer diffusers instead build the LoraConfig from the header's ``lora_adapter_metadata`` (:func:`load_like_newer_diffusers`).
"""
from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from audiotrain.lora import adapter as lora
from audiotrain_acestep import adapter_format
from audiotrain_acestep.backbone import DEFAULT_TARGETS
from tests.acestep.test_adapters import inputs, make_model, randomise_lora

ADAPTER = "ace_step_lora"  # the adapter name ACE-Step's load_lora uses


def _inject(config, tensors: dict[str, torch.Tensor], lora_weight: float):
    from peft import inject_adapter_in_model, set_peft_model_state_dict
    from peft.tuners.lora import LoraLayer

    model = make_model()
    inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    result = set_peft_model_state_dict(model, tensors, adapter_name=ADAPTER)
    assert not result.unexpected_keys
    assert not [k for k in result.missing_keys if "lora_" in k]
    for m in model.modules():  # set_weights_and_activate_adapters(model, [ADAPTER], [lora_weight])
        if isinstance(m, LoraLayer):
            m.set_scale(ADAPTER, lora_weight)
    with torch.no_grad():
        return model(**inputs()).sample


def load_like_acestep(path, lora_weight: float = 1.0) -> torch.Tensor:
    """The transformer's output with the file loaded as ACE-Step's pipeline loads it: its metadata unread."""
    from peft import LoraConfig

    tensors = load_file(str(path))
    r = next(int(v.shape[0]) for k, v in tensors.items() if k.endswith("lora_A.weight"))
    targets = sorted({k.split(".lora_")[0] for k in tensors})
    return _inject(LoraConfig(r=r, lora_alpha=r, use_rslora=False, target_modules=targets), tensors, lora_weight)


def load_like_newer_diffusers(path) -> torch.Tensor:
    from peft import LoraConfig

    with safe_open(str(path), framework="pt") as fh:
        config = json.loads(fh.metadata()["lora_adapter_metadata"])
    return _inject(LoraConfig(**config), load_file(str(path)), 1.0)


def trained(settings: lora.LoRASettings):
    """An adapter as training leaves it (every lora_B nonzero) and its output in audiotrain."""
    model = lora.attach(make_model(), settings)
    randomise_lora(model)
    with torch.no_grad():
        return model, model(**inputs()).sample


def read_back(directory):
    settings, state = adapter_format.load(directory)
    model = lora.attach(make_model(), settings)
    lora.load_adapter_state(model, state)
    with torch.no_grad():
        return settings, state, model(**inputs()).sample


# scale 2 (alpha/r), scale 2 with rsLoRA (alpha/√r), ACE-Step's default config's shape (rsLoRA, scale 8)
POWER_OF_TWO = [dict(r=4, alpha=8), dict(r=4, alpha=4, use_rslora=True), dict(r=16, alpha=32, use_rslora=True)]


@pytest.mark.parametrize("kw", POWER_OF_TWO, ids=lambda kw: f"r{kw['r']}-a{kw['alpha']}-rs{kw.get('use_rslora', False)}")
def test_exported_adapter_plays_at_its_trained_strength_in_acestep_and_reads_back_bit_for_bit(kw, tmp_path):
    s = lora.LoRASettings(target_modules=list(DEFAULT_TARGETS), **kw)
    assert s.scale == 2.0 or s.scale == 8.0
    model, ref = trained(s)
    base = make_model()
    with torch.no_grad():
        base_out = base(**inputs()).sample
    path = adapter_format.save(model, s, tmp_path / "acestep")

    # ACE-Step's path (metadata unread, alpha = r) at lora_weight=1 gives audiotrain's output
    theirs = load_like_acestep(path)
    assert (theirs - ref).abs().max().item() < 1e-6
    assert (ref - base_out).abs().max().item() > 1e-2  # the adapter does change the output
    # the file as written before (lora_B as trained) played there at scale 1: visibly weaker
    unfolded = {k: v / s.scale if ".lora_B." in k else v for k, v in load_file(str(path)).items()}
    save_file(unfolded, str(tmp_path / "old.safetensors"))
    assert (load_like_acestep(tmp_path / "old.safetensors") - ref).abs().max().item() > 1e-3
    # newer diffusers, which read the header's lora_adapter_metadata, play it the same
    assert (load_like_newer_diffusers(path) - ref).abs().max().item() < 1e-6

    # audiotrain reads back the adapter it saved: settings, tensors and outputs bit for bit
    s2, state, out = read_back(tmp_path / "acestep")
    assert (s2.r, s2.alpha, s2.use_rslora, sorted(s2.target_modules)) == (s.r, s.alpha, s.use_rslora,
                                                                            sorted(s.target_modules))
    saved = lora.adapter_state(model)
    assert set(state) == set(saved) and all(torch.equal(state[k], saved[k]) for k in saved)
    assert torch.equal(out, ref)


def test_the_file_describes_itself_as_scale_one_and_keeps_the_trained_config(tmp_path):
    s = lora.LoRASettings(r=4, alpha=8, target_modules=list(DEFAULT_TARGETS))
    model, _ = trained(s)
    path = adapter_format.save(model, s, tmp_path / "acestep")
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
        key = "transformer_blocks.0.attn.to_q.lora_B.weight"
        assert torch.equal(fh.get_tensor(key), lora.adapter_state(model)[key] * 2)
    described = json.loads(meta["lora_adapter_metadata"])
    assert (described["r"], described["lora_alpha"], described["use_rslora"]) == (4, 4, False)
    kept = json.loads(meta["audiotrain_lora"])
    assert kept["scale_folded_into_lora_B"] == 2.0
    assert (kept["config"]["r"], kept["config"]["lora_alpha"], kept["config"]["use_rslora"]) == (4, 8, False)
    side = json.loads((tmp_path / "acestep" / "adapter_config.json").read_text())
    assert (side["r"], side["lora_alpha"], side["use_rslora"]) == (4, 4, False)


def test_a_scale_that_is_not_a_power_of_two_plays_right_and_reads_back_within_one_ulp(tmp_path):
    s = lora.LoRASettings(r=8, alpha=32, use_rslora=True, target_modules=list(DEFAULT_TARGETS))
    assert s.scale == pytest.approx(32 / math.sqrt(8))
    model, ref = trained(s)
    path = adapter_format.save(model, s, tmp_path / "acestep")
    assert (load_like_acestep(path) - ref).abs().max().item() < 1e-6
    s2, state, out = read_back(tmp_path / "acestep")
    assert (s2.r, s2.alpha, s2.use_rslora) == (8, 32, True)
    saved = lora.adapter_state(model)
    for k, v in saved.items():
        if ".lora_A." in k:
            assert torch.equal(state[k], v)
        else:
            ulp = torch.nextafter(v.abs(), torch.tensor(math.inf)) - v.abs()
            assert ((state[k] - v).abs() <= ulp).all(), k
    assert (out - ref).abs().max().item() < 1e-6


def test_a_file_from_acesteps_own_trainer_reads_as_its_pipeline_plays_it(tmp_path):
    """diffusers' save_lora_adapter: plain PEFT keys; without metadata alpha = r (scale 1), lora_B as stored."""
    s = lora.LoRASettings(r=4, alpha=8, target_modules=list(DEFAULT_TARGETS))
    model, _ = trained(s)
    state = lora.adapter_state(model)
    (tmp_path / "bare").mkdir()
    save_file(state, str(tmp_path / "bare" / adapter_format.FILENAME), metadata={"format": "pt"})
    s2, got, out = read_back(tmp_path / "bare")
    assert (s2.r, s2.alpha, s2.use_rslora) == (4, 4, False)
    assert all(torch.equal(got[k], state[k]) for k in state)
    assert (out - load_like_acestep(tmp_path / "bare" / adapter_format.FILENAME)).abs().max().item() < 1e-6

    # newer diffusers write the LoraConfig into the header: it is honoured, and nothing is unfolded
    (tmp_path / "meta").mkdir()
    config = {"r": 4, "lora_alpha": 8, "use_rslora": True, "target_modules": list(DEFAULT_TARGETS)}
    save_file(state, str(tmp_path / "meta" / adapter_format.FILENAME),
              metadata={"format": "pt", "lora_adapter_metadata": json.dumps(config)})
    s3, got3, _ = read_back(tmp_path / "meta")
    assert (s3.r, s3.alpha, s3.use_rslora) == (4, 8, True)
    assert all(torch.equal(got3[k], state[k]) for k in state)


def test_a_folded_file_without_its_scale_is_one_sentence(tmp_path):
    from audiotrain.errors import UserError

    s = lora.LoRASettings(r=4, alpha=8, target_modules=list(DEFAULT_TARGETS))
    model, _ = trained(s)
    (tmp_path / "bad").mkdir()
    save_file(lora.adapter_state(model), str(tmp_path / "bad" / adapter_format.FILENAME),
              metadata={"format": "pt", "audiotrain_lora": json.dumps({"config": s.to_json()})})
    with pytest.raises(UserError, match="folded into lora_B but does not say which scale"):
        adapter_format.load(tmp_path / "bad")
