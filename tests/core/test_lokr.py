"""``lora=lokr``: PEFT's LoKr through the core on every plugin's tiny preset - only LoKr weights train, the PEFT
folder round-trips bit for bit, a merged model gives the unmerged outputs (within 1e-5 relative), a short run
writes a LoKr adapter, resumes exactly and merges with ``audiotrain merge``; what PEFT cannot do is refused."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from torch import nn

from audiotrain.lora import adapter as lora_adapter
from audiotrain.lora.adapter import LoRAConfigError, LoRASettings
from audiotrain.plugins import registry
from tests.conftest import compose
from tests.contract.test_plugin_contract import overrides

PLUGINS = sorted(registry.discover())
#: plugins whose default targets PEFT's LoKr cannot wrap, and why (refused in one sentence)
REFUSED = {"tortoise": "Conv1D"}


def _build(plugin, data, tmp_path, *extra):
    from audiotrain.train.data_setup import load_data
    from audiotrain.train.model_setup import build_model
    from audiotrain.train.module import TrainModule

    cfg = compose(overrides(plugin, data, tmp_path, "lora=lokr", "lora.r=4", "lora.alpha=8", *extra))
    loaded = load_data(cfg, plugin, tmp_path / "run", "cpu", save_report=False)
    model = build_model(cfg, plugin, report=False)
    module = TrainModule(model.backbone, plugin, cfg, loaded.encoders, None, adapter_only=model.adapter_only)
    return cfg, model, module.features([loaded.train[0], loaded.train[1]], salt=0)


def _randomise(root: nn.Module) -> dict[str, torch.Tensor]:
    """Every LoKr factor random (PEFT starts one factor at zero, which would make every check trivial)."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in root.named_parameters():
            if "lokr_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return lora_adapter.adapter_state(root)


def test_lokr_group_composes_to_peft_lokr_settings():
    cfg = compose(["model=acestep", "lora=lokr", "lora.r=8", "lora.alpha=16", "lora.dropout=0.1",
                   "lora.module_dropout=0.05", "lora.decompose_both=true", "lora.decompose_factor=4"])
    from audiotrain.lora.from_config import settings_from_cfg

    s = settings_from_cfg(cfg.lora, ["to_q"])
    assert (s.algo, s.r, s.alpha, s.dropout, s.module_dropout, s.decompose_both, s.decompose_factor) == \
        ("lokr", 8, 16.0, 0.1, 0.05, True, 4)
    peft = s.to_peft()
    assert type(peft).__name__ == "LoKrConfig" and (peft.rank_dropout, peft.module_dropout) == (0.1, 0.05)
    assert (peft.decompose_both, peft.decompose_factor, list(peft.target_modules)) == (True, 4, ["to_q"])
    assert LoRASettings.from_json(s.to_json()) == s and s.scale == 2.0


def test_lokr_refuses_what_peft_cannot_wrap_in_one_sentence():
    from transformers.pytorch_utils import Conv1D

    net = nn.Module()
    net.gpt, net.emb = Conv1D(8, 4), nn.Embedding(5, 4)
    for target, kind in (("gpt", "Conv1D"), ("emb", "Embedding")):
        with pytest.raises(LoRAConfigError, match=f"lora=lokr cannot adapt {target}, a {kind}"):
            lora_adapter.attach(net, LoRASettings(r=2, alpha=2, target_modules=[target], algo="lokr"))
    with pytest.raises(LoRAConfigError, match="no rsLoRA"):
        lora_adapter.attach(net, LoRASettings(r=2, alpha=2, target_modules=["gpt"], algo="lokr", use_rslora=True))
    import bitsandbytes as bnb

    q = nn.Module()
    q.up = bnb.nn.Linear4bit(64, 64)
    with pytest.raises(LoRAConfigError, match="quantised base .* drop model.quantize"):
        lora_adapter.attach(q, LoRASettings(r=2, alpha=2, target_modules=["up"], algo="lokr"))


@pytest.fixture(scope="module", params=PLUGINS)
def plugin(request):
    compose([])
    return registry.get(request.param)


@pytest.fixture(scope="module")
def data(plugin, tmp_path_factory):
    return plugin.example_data(tmp_path_factory.mktemp(f"{plugin.name}_lokr"), count=2)


@pytest.mark.slow  # one tiny model per plugin, built three times: ~30 s for all
def test_every_plugin_trains_saves_loads_and_merges_lokr(plugin, data, tmp_path):
    if plugin.name in REFUSED:
        with pytest.raises(LoRAConfigError, match=f"lora=lokr cannot adapt .*a {REFUSED[plugin.name]}"):
            _build(plugin, data, tmp_path)
        return
    cfg, model, batch = _build(plugin, data, tmp_path)
    backbone, root = model.backbone, model.backbone.adapter_root()
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    assert trainable and all(".lokr_w" in n for n in trainable), sorted(n for n in trainable if "lokr_" not in n)[:5]
    state = _randomise(root)
    # gradients reach LoKr weights only
    backbone.train()
    loss = backbone.training_losses(batch, generator=torch.Generator().manual_seed(0))["loss"]
    assert torch.isfinite(loss)
    loss.backward()
    with_grad = {n for n, p in backbone.named_parameters() if p.grad is not None}
    assert with_grad and with_grad <= trainable
    # the PEFT folder: LoKr config and tensors, bit for bit
    lora_adapter.save_peft(root, model.settings, tmp_path / "peft", base_model=f"{plugin.name}:tiny")
    written = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert (written["peft_type"], written["r"], written["alpha"]) == ("LOKR", 4, 8)
    settings, loaded = lora_adapter.load_peft(tmp_path / "peft")
    assert replace(settings, target_modules=sorted(settings.target_modules)) == \
        replace(model.settings, target_modules=sorted(model.settings.target_modules))
    fresh_backbone = plugin.build_backbone(cfg)
    fresh = fresh_backbone.adapter_root()
    lora_adapter.attach(fresh, settings)
    lora_adapter.load_adapter_state(fresh, loaded)
    again = lora_adapter.adapter_state(fresh)
    assert again.keys() == state.keys() and all(torch.equal(again[k], state[k]) for k in state)
    # merged == unmerged, at the loss of a fixed batch and noise
    # the trained model's base weights (it released the ones its forward never reads: the fresh build keeps its own)
    assert not fresh.load_state_dict(root.state_dict(), strict=False).unexpected_keys
    fresh_backbone.eval()
    with torch.no_grad():
        before = fresh_backbone.training_losses(batch, generator=torch.Generator().manual_seed(1))["loss"]
        lora_adapter.merge(fresh)
        assert not any("lokr_" in n for n, _ in fresh.named_parameters())
        after = fresh_backbone.training_losses(batch, generator=torch.Generator().manual_seed(1))["loss"]
    assert abs(float(after) - float(before)) <= 1e-5 * abs(float(before)), (float(before), float(after))


@pytest.mark.slow  # a two-step tiny ACE-Step run and a merge: ~28 s
def test_a_short_lokr_run_writes_a_peft_lokr_adapter_and_merges(tiny_cfg, tmp_path):
    from safetensors.torch import load_file

    from audiotrain.cli.adapters import merge
    from audiotrain.train.run import train

    s = train(tiny_cfg("lora=lokr", "lora.r=4", "lora.alpha=8", "trainer.max_steps=2", run="lokr"))
    assert s["steps"] == 2 and s["last_loss"] == s["last_loss"] and abs(s["last_loss"]) < 1e6
    peft = f"{s['adapter_dir']}/peft"
    assert json.loads(open(f"{peft}/adapter_config.json").read())["peft_type"] == "LOKR"
    weights = load_file(f"{peft}/adapter_model.safetensors")
    assert weights and all(".lokr_w" in k and k.startswith("base_model.model.") for k in weights)
    assert merge([s["run_dir"], "--out", str(tmp_path / "merged")]) == 0
    assert list((tmp_path / "merged").rglob("*.safetensors"))


@pytest.mark.slow  # three tiny ACE-Step runs: ~40 s
def test_a_lokr_run_resumes_exactly(tiny_cfg):
    from safetensors.torch import load_file

    from audiotrain.train.run import train

    def cfg(*extra, run):
        return tiny_cfg("lora=lokr", "lora.r=4", "lora.alpha=8", "trainer.every_n_train_steps=2", *extra, run=run)

    full = train(cfg("trainer.max_steps=4", run="full"))
    half = train(cfg("trainer.max_steps=2", run="half"))
    resumed = train(cfg("trainer.max_steps=4", f"ckpt_path={half['run_dir']}/checkpoints/last.ckpt", run="again"))
    assert resumed["steps"] == full["steps"] == 4 and resumed["last_loss"] == full["last_loss"]
    a = load_file(f"{full['adapter_dir']}/peft/adapter_model.safetensors")
    b = load_file(f"{resumed['adapter_dir']}/peft/adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_lora_checkpoint_does_not_resume_a_lokr_run_nor_the_reverse():
    from audiotrain.train.checkpoint_identity import identity, identity_problem

    lora = compose(["model=acestep", "lora.r=4", "lora.alpha=8"])
    lokr = compose(["model=acestep", "lora=lokr", "lora.r=4", "lora.alpha=8"])
    assert identity_problem(identity(lokr), lokr, "ckpt", "or start fresh") is None
    problem = identity_problem(identity(lora), lokr, "ckpt", "or start fresh")
    assert problem == ("ckpt was trained with a lora adapter (lora=default), this run trains a lokr adapter: add "
                       "lora=default (or start fresh).")
    assert "add lora=lokr" in identity_problem(identity(lokr), lora, "ckpt", "or start fresh")
    assert "algo" not in identity(lora)["lora"]  # a LoRA identity is the one written before LoKr existed


def test_lokr_takes_freeze_patterns_and_model_init_from_like_lora(tmp_path):
    """``model.freeze`` names LoKr weights (``*lokr_w1*``) or layers, checked before the model is built as after;
    ``model.init_from`` an earlier LoKr adapter continues a LoKr run bit for bit and merges into a full fine-tune."""
    from audiotrain.config.validate import training_plan_problems
    from audiotrain.train.model_setup import build_model

    plugin = registry.get("acestep15")
    base = ["model=acestep15", "model.variant=tiny", "lora=lokr", "lora.r=4", "lora.alpha=8"]
    for pattern, frozen in (("*lokr_w1*", lambda n: ".lokr_w1" in n), ("decoder.layers.0.*", lambda n: ".layers.0." in n)):
        cfg = compose([*base, f"model.freeze=['{pattern}']"])
        assert training_plan_problems(cfg, plugin) == []  # the early check knows LoKr's weight names
        root = build_model(cfg, plugin, report=False).backbone.adapter_root()
        adapter = {n: p for n, p in root.named_parameters() if "lokr_" in n}
        assert adapter and any(frozen(n) for n in adapter) and not all(frozen(n) for n in adapter)
        assert all(p.requires_grad != frozen(n) for n, p in adapter.items())
    problems = training_plan_problems(compose([*base, "model.freeze=['*lokr_zz*']"]), plugin)
    assert len(problems) == 1 and "'*lokr_zz*'" in problems[0]

    first = build_model(compose(base), plugin, report=False)
    want = _randomise(first.backbone.adapter_root())
    lora_adapter.save_peft(first.backbone.adapter_root(), first.settings, tmp_path / "peft")
    again = build_model(compose([*base, f"model.init_from={tmp_path / 'peft'}"]), plugin, report=False)
    got = lora_adapter.adapter_state(again.backbone.adapter_root())
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    full = build_model(compose(["model=acestep15", "model.variant=tiny", "lora=none", f"model.init_from={tmp_path / 'peft'}"]), plugin,
                       report=False)
    merged = dict(full.backbone.adapter_root().named_parameters())
    assert not any("lokr_" in n for n in merged)
    first_root = first.backbone.adapter_root()
    lora_adapter.merge(first_root)
    name = "decoder.layers.0.self_attn.q_proj.weight"
    assert torch.equal(merged[name], dict(first_root.named_parameters())[name])
