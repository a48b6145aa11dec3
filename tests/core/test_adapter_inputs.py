"""``audiotrain export`` and ``audiotrain merge`` take the adapters ``lora.init_from`` takes: a PEFT folder that
says its model, ACE-Step's ``pytorch_lora_weights.safetensors`` as its trainer writes it (plain PEFT keys, no
metadata: rank from the shapes, alpha from ``--alpha``), a VALL-E ``lora.sft``. Export writes them in a run's
adapter layout bit for bit; merge folds them into the base weights exactly as attaching them would."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from audiotrain.cli.main import main
from audiotrain.lora import adapter as lora_adapter
from audiotrain.plugins import registry
from audiotrain.train.model_setup import build_model
from tests.conftest import compose

CASES = {"acestep": ["model=acestep", "model.preset=tiny", "lora.r=4", "lora.alpha=8"],
         "valle": ["model=valle", "model.preset=tiny", "lora.r=4", "lora.alpha=8"]}


def _trained(name: str, tmp_path: Path):
    """A tiny model whose adapter holds random (non-zero) weights: (plugin, built model, its adapter state)."""
    plugin = registry.get(name)
    built = build_model(compose(CASES[name]), plugin, report=False)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for key, p in built.backbone.adapter_root().named_parameters():
            if "lora_" in key:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return plugin, built, lora_adapter.adapter_state(built.backbone.adapter_root())


def _same(a, b):
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _merged_state(name: str, settings, state) -> dict:
    """The base model with the adapter attached, loaded and merged in memory (what merge must write)."""
    root = registry.get(name).build_backbone(compose(CASES[name])).adapter_root()
    lora_adapter.attach(root, settings)
    lora_adapter.load_adapter_state(root, state)
    lora_adapter.merge(root)
    return {k: v.detach().clone() for k, v in root.state_dict().items()}


def _base_state(name: str) -> dict:
    return registry.get(name).build_backbone(compose(CASES[name])).adapter_root().state_dict()


def _bare_trainer_file(state, tmp_path: Path) -> Path:
    bare = tmp_path / "trainer" / "pytorch_lora_weights.safetensors"  # plain PEFT keys, no metadata
    bare.parent.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(bare))
    return bare


def test_export_an_acestep_trainer_file_writes_both_formats_bit_for_bit(tmp_path, capsys):
    plugin, built, want = _trained("acestep", tmp_path)
    bare = _bare_trainer_file(want, tmp_path)
    out = tmp_path / "exported"
    assert main(["export", str(bare), "model.preset=tiny", "--alpha", "8", "--out", str(out)]) == 0
    settings, state = lora_adapter.load_peft(out / "peft")
    assert (settings.r, settings.alpha) == (4, 8.0)
    assert lora_adapter.peft_base_model(out / "peft") == "acestep:tiny"
    _same(state, want)
    native_settings, native_state = plugin.native_adapter_format().load(out / "acestep")
    assert (native_settings.r, native_settings.alpha) == (4, 8.0)
    _same(native_state, want)  # scale 2 folded into lora_B and undone on reading: exact
    # the raw file holds lora_B x 2, so ACE-Step's pipeline (alpha = r) plays it at the strength it was trained at
    raw = load_file(str(out / "acestep" / "pytorch_lora_weights.safetensors"))
    key = next(k for k in want if k.endswith("lora_B.weight"))
    assert torch.equal(raw[key], want[key] * 2)


def test_without_alpha_a_bare_file_plays_at_scale_one_and_says_so(tmp_path, capsys):
    _, _, want = _trained("acestep", tmp_path)
    bare = _bare_trainer_file(want, tmp_path)
    assert main(["export", str(bare), "model.preset=tiny", "--out", str(tmp_path / "e")]) == 0
    out = capsys.readouterr().out
    assert "carries no LoRA config" in out and "--alpha" in out
    settings, _ = lora_adapter.load_peft(tmp_path / "e" / "peft")
    assert settings.alpha == settings.r == 4


def test_merge_a_bare_file_equals_attaching_it(tmp_path):
    _, built, want = _trained("acestep", tmp_path)
    bare = _bare_trainer_file(want, tmp_path)
    assert main(["merge", str(bare), "model.preset=tiny", "--alpha", "8", "--out", str(tmp_path / "m")]) == 0
    got = load_file(str(tmp_path / "m" / "ace_step_transformer" / "diffusion_pytorch_model.safetensors"))
    expected = _merged_state("acestep", built.settings, want)
    assert got.keys() == expected.keys()
    assert got.keys() == expected.keys()
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=0, atol=0)
    base = _base_state("acestep")
    assert [k for k in expected if not torch.equal(got[k], base[k])]  # the adapter is really in the weights


def test_a_valle_lora_sft_and_a_peft_folder_export_and_merge(tmp_path):
    plugin, built, want = _trained("valle", tmp_path)
    sft = plugin.save_adapter_native(built.backbone.adapter_root(), built.settings, tmp_path / "native")
    assert sft.name == "lora.sft"
    assert main(["export", str(sft), "model.preset=tiny", "--out", str(tmp_path / "e")]) == 0
    settings, state = lora_adapter.load_peft(tmp_path / "e" / "peft")
    assert (settings.r, settings.alpha) == (4, 8.0)
    _same(state, want)
    assert (tmp_path / "e" / "valle" / "lora.sft").is_file()
    # the exported PEFT folder says its model (valle:tiny): merge needs no overrides
    assert main(["merge", str(tmp_path / "e" / "peft"), "--out", str(tmp_path / "m")]) == 0
    got = load_file(str(tmp_path / "m" / "fp32.sft"))  # vall-e's own layout: its plain state-dict keys
    expected = _merged_state("valle", built.settings, want)
    assert got.keys() == expected.keys()
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=0, atol=0)


def test_bad_sources_are_one_sentence(tmp_path, capsys):
    _, _, want = _trained("acestep", tmp_path)
    bare = _bare_trainer_file(want, tmp_path)
    assert main(["export", str(bare), "--out", str(tmp_path / "x")]) == 2  # default preset v1-3.5b: wrong shapes
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.endswith("it fits model.preset=tiny: add model.preset=tiny.")
    assert not (tmp_path / "x").exists()

    odd = tmp_path / "odd" / "weights.safetensors"
    odd.parent.mkdir()
    save_file({k: v.contiguous() for k, v in want.items()}, str(odd))
    assert main(["export", str(odd), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "says not which model it is for" in err and "model=NAME" in err and "\n" not in err

    assert main(["export", str(bare), "model=nosuch", "--out", str(tmp_path / "x")]) == 2
    assert "not installed" in capsys.readouterr().err

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model:\n  name: acestep\n  preset: tiny\n")
    assert main(["export", str(run), "model=valle"]) == 2
    assert "is an audiotrain run" in capsys.readouterr().err
    assert main(["merge", str(bare), "preset", "--out", str(tmp_path / "x")]) == 2
    assert "is not KEY=VALUE" in capsys.readouterr().err
