"""``lora.init_from``: a LoRA run starts from an adapter trained elsewhere - a PEFT folder, the plugin's own
adapter file (with its config, or without one as ACE-Step's trainer may write it), a layout of the plugin's own
(ACE-Step 1.5's ``adapter/`` folder and ``lokr_weights.safetensors``) or a run directory - with the adapter's
tensors bit for bit, LoRA and LoKr; a rank or adapter kind that differs or a full fine-tune is one sentence."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from audiotrain.errors import UserError
from audiotrain.lora import adapter as lora_adapter
from audiotrain.plugins import registry
from audiotrain.train.model_setup import build_model
from tests.conftest import compose

CASES = {"acestep": ["model=acestep", "model.preset=tiny", "lora.r=4", "lora.alpha=8"],
         "valle": ["model=valle", "model.preset=tiny", "lora.r=4", "lora.alpha=8"],
         "acestep15": ["model=acestep15", "model.variant=tiny", "lora.r=4", "lora.alpha=8"],
         "acestep15-lokr": ["model=acestep15", "model.variant=tiny", "lora=lokr", "lora.r=4", "lora.alpha=8"]}


def _trained(name: str, tmp_path):
    """A tiny model whose adapter holds random (non-zero) weights, saved as PEFT and in the native format."""
    plugin = registry.get(name.split("-")[0])
    cfg = compose(CASES[name])
    built = build_model(cfg, plugin, report=False)
    root = built.backbone.adapter_root()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param_name, p in root.named_parameters():
            if "lora_" in param_name or "lokr_" in param_name:
                p.copy_(torch.randn(p.shape, generator=g))
    peft = lora_adapter.save_peft(root, built.settings, tmp_path / "peft")
    native = plugin.save_adapter_native(root, built.settings, tmp_path / "native")
    return plugin, built, lora_adapter.adapter_state(root), peft, native


def _loaded(plugin, name, *extra):
    cfg = compose([*CASES[name], *extra])
    built = build_model(cfg, plugin)
    return lora_adapter.adapter_state(built.backbone.adapter_root())


def _same(a, b):
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", sorted(CASES))
def test_peft_folder_and_native_file_start_the_run_bit_for_bit(name, tmp_path):
    plugin, _, want, peft, native = _trained(name, tmp_path)
    peft_dir = peft if peft.is_dir() else peft.parent
    _same(_loaded(plugin, name, f"lora.init_from={peft_dir}"), want)
    _same(_loaded(plugin, name, f"lora.init_from={native}"), want)
    _same(_loaded(plugin, name, f"lora.init_from={native.parent}"), want)


def test_ace_step_15_files_as_its_trainer_writes_them_start_the_run_and_a_kind_mismatch_is_one_sentence(tmp_path):
    plugin, _, want, _, folder = _trained("acestep15", tmp_path / "lora")
    # ACE-Step 1.5's own LoRA layout (decoder-relative keys), named every way a user may point at it
    for given in (folder, folder / "adapter_model.safetensors", folder.parent):
        _same(_loaded(plugin, "acestep15", f"lora.init_from={given}"), want)
    _, _, want_lokr, _, lokr = _trained("acestep15-lokr", tmp_path / "lokr")
    assert lokr.name == "lokr_weights.safetensors"
    for given in (lokr, lokr.parent):
        _same(_loaded(plugin, "acestep15-lokr", f"lora.init_from={given}"), want_lokr)
    with pytest.raises(UserError) as e:
        _loaded(plugin, "acestep15", f"lora.init_from={lokr}")
    assert "is a LOKR adapter" in str(e.value) and "lora=lokr" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UserError) as e:  # a LoRA of other targets: the missing layer is named
        _loaded(plugin, "acestep15", f"lora.init_from={folder}", "model.lora_mlp=true")
    assert " lacks " in str(e.value) and ".mlp." in str(e.value) and "\n" not in str(e.value)


def test_an_acestep_trainer_file_without_config_takes_rank_from_shapes_and_alpha_from_the_run(tmp_path):
    plugin, _, want, _, native = _trained("acestep", tmp_path)
    bare = tmp_path / "trainer" / native.name  # plain PEFT key names, no metadata, as ACE-Step's trainer writes
    bare.parent.mkdir()
    save_file({k: v.contiguous() for k, v in want.items()}, str(bare))
    _same(_loaded(plugin, "acestep", f"lora.init_from={bare}", "lora.alpha=16"), want)
    with pytest.raises(UserError) as e:
        _loaded(plugin, "acestep", f"lora.init_from={bare}", "lora.r=8")
    assert "lora.r" in str(e.value) and "\n" not in str(e.value)


def test_a_full_fine_tune_or_both_init_froms_or_a_stray_file_is_one_sentence(tmp_path):
    plugin, _, _, _, native = _trained("acestep", tmp_path)
    with pytest.raises(UserError, match="needs a LoRA run"):
        build_model(compose(["model=acestep", "model.preset=tiny", "lora=none", f"lora.init_from={native}"]), plugin)
    with pytest.raises(UserError, match="are both set"):
        _loaded(plugin, "acestep", f"lora.init_from={native}", f"model.init_from={native}")
    stray = tmp_path / "notes.txt"
    stray.write_text("hello")
    with pytest.raises(UserError) as e:
        _loaded(plugin, "acestep", f"lora.init_from={stray}")
    assert str(e.value).startswith(f"lora.init_from={stray} is a text file") and "\n" not in str(e.value)
    with pytest.raises(UserError, match="does not exist"):
        _loaded(plugin, "acestep", f"lora.init_from={tmp_path / 'nowhere'}")
