"""The plugin contract: every plugin the registry discovers is held to the same surface, so a new plugin gets these
tests by being installed. Each plugin writes its own small synthetic dataset (``Plugin.example_data``) and is:

- composed and validated with its tiny preset;
- built at its tiny preset (the reference names, at a small size) and at each released preset on the meta device
  (``Plugin.released_presets``: exactly the released checkpoint's keys and shapes, ``tests/ref_keys``);
- asked for its frozen encoders' cache keys twice and in a fresh interpreter (the same keys: a cache built once is
  found again);
- fed two collated examples: a finite loss, whose gradients reach exactly the trainable parameters;
- round-tripped through its adapter files, PEFT and native, bit for bit.

Composition with every option of every shared group is ``tests/contract/test_config_groups.py``.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from audiotrain.lora import adapter as lora_adapter
from audiotrain.plugins import registry
from tests.conftest import NO_SIGNAL_HANDLERS, compose
from tests.ref_keys import ref_keys

PLUGINS = sorted(registry.discover())


@pytest.fixture(scope="module", params=PLUGINS)
def plugin(request):
    compose([])  # the resolvers and every plugin's config options, as the CLI registers them
    return registry.get(request.param)


@pytest.fixture(scope="module")
def data(plugin, tmp_path_factory) -> Path:
    return plugin.example_data(tmp_path_factory.mktemp(f"{plugin.name}_data"), count=4)


def overrides(plugin, data: Path, root: Path, *extra: str) -> list[str]:
    return [f"model={plugin.name}", f"data={data}", "model.preset=tiny", "tracking=none", "dataset.num_workers=0",
            "trainer.accelerator=cpu", "trainer.progress_bar=false", "trainer.every_plot_step=0", NO_SIGNAL_HANDLERS,
            f"cache_dir={root / 'cache'}", f"paths.log_dir={root / 'logs'}", f"paths.run_dir={root / 'logs' / 'run'}",
            *extra]


def _generic(key: str) -> str:
    return re.sub(r"\.\d+(?=\.|$)", ".#", key)


def _shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def test_every_plugin_is_discovered_and_names_itself():
    assert PLUGINS, "no audiotrain plugin is installed"
    for name in PLUGINS:
        assert registry.get(name).name == name
        assert ("model", name) in registry.get(name).config_options()


def test_composes_and_validates_with_its_tiny_preset(plugin, data, tmp_path):
    from audiotrain.config.compose import check_job

    cfg = check_job(overrides(plugin, data, tmp_path), registry.get)
    assert cfg.model.name == plugin.name and cfg.model.preset == "tiny"


def test_released_presets_match_the_reference_keys_on_meta(plugin, tmp_path):
    assert plugin.released_presets, f"{plugin.name} names no released preset (Plugin.released_presets)"
    import fnmatch

    for preset, ref_name in plugin.released_presets.items():
        ref = dict(ref_keys(ref_name))
        ref["keys"] = {k: v for k, v in ref["keys"].items()
                       if not any(fnmatch.fnmatchcase(k, pat) for pat in plugin.dropped_release_keys)}
        cfg = compose(overrides(plugin, tmp_path, tmp_path, f"model.preset={preset}"))
        with torch.device("meta"):
            backbone = plugin.build_backbone(cfg, device="meta")
        ours = _shapes(backbone.adapter_root())
        assert sorted(set(ours) - set(ref["keys"])) == [], f"{preset}: keys the release does not have"
        assert sorted(set(ref["keys"]) - set(ours)) == [], f"{preset}: release keys we lack"
        assert {k: v for k, v in ours.items() if v != ref["keys"][k]} == {}, f"{preset}: shapes differ"


def test_tiny_preset_uses_the_reference_names(plugin, data, tmp_path):
    backbone = plugin.build_backbone(compose(overrides(plugin, data, tmp_path)))
    tiny = {_generic(k) for k in backbone.adapter_root().state_dict()}
    for ref_name in plugin.released_presets.values():
        released = {_generic(k) for k in ref_keys(ref_name)["keys"]}
        assert sorted(tiny - released) == [], "tiny keys the release does not have"
    # the tiny preset is small enough for the CPU tests
    assert sum(p.numel() for p in backbone.parameters()) < 5_000_000


def _cache_keys(plugin, cfg) -> list[tuple[str, str]]:
    return [(t.name, t.cache_key()) for t in plugin.build_encoders(cfg)]


def test_cache_keys_are_stable_within_and_across_processes(plugin, data, tmp_path):
    cfg = compose(overrides(plugin, data, tmp_path))
    keys = _cache_keys(plugin, cfg)
    assert keys and keys == _cache_keys(plugin, cfg)
    assert len({name for name, _ in keys}) == len(keys), "two encoders share a cache namespace"
    assert all(re.fullmatch(r"[0-9A-Za-z_.-]+", k) for _, k in keys), keys  # no reprs or addresses in a key
    script = ("import json, sys; from tests.conftest import compose; from audiotrain.plugins import registry; "
              "p = registry.get(sys.argv[1]); cfg = compose(json.loads(sys.argv[2])); "
              "print(json.dumps([[t.name, t.cache_key()] for t in p.build_encoders(cfg)]))")
    out = subprocess.run([sys.executable, "-c", script, plugin.name, json.dumps(overrides(plugin, data, tmp_path))],
                         capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-3000:]
    assert [tuple(k) for k in json.loads(out.stdout.strip().splitlines()[-1])] == keys


def _module(plugin, data, tmp_path, *extra: str):
    from audiotrain.train.data_setup import load_data
    from audiotrain.train.model_setup import build_model
    from audiotrain.train.module import TrainModule

    cfg = compose(overrides(plugin, data, tmp_path, *extra))
    loaded = load_data(cfg, plugin, tmp_path / "run", "cpu", save_report=False)
    model = build_model(cfg, plugin, report=False)
    module = TrainModule(model.backbone, plugin, cfg, loaded.encoders, None, adapter_only=model.adapter_only)
    module.dataset = loaded.train
    return module, loaded.train, model


def test_two_examples_collate_to_a_finite_loss_with_gradients_on_trainable_only(plugin, data, tmp_path):
    module, ds, model = _module(plugin, data, tmp_path)
    assert len(ds) >= 2
    batch = module.features([ds[0], ds[1]], salt=0)
    assert any(isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == 2 for v in batch.values()), \
        {k: getattr(v, "shape", type(v)) for k, v in batch.items()}
    backbone = model.backbone
    backbone.train()
    losses = backbone.training_losses(batch, generator=torch.Generator().manual_seed(0))
    assert losses["loss"].dim() == 0 and torch.isfinite(losses["loss"])
    assert all(torch.isfinite(v).all() for v in losses.values())
    losses["loss"].backward()
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    with_grad = {n for n, p in backbone.named_parameters() if p.grad is not None}
    assert trainable and with_grad <= trainable, sorted(with_grad - trainable)[:5]
    assert all(torch.isfinite(p.grad).all() for p in backbone.parameters() if p.grad is not None)
    assert any(float(p.grad.abs().sum()) > 0 for p in backbone.parameters() if p.grad is not None)
    # the base weights LoRA wraps are frozen; only adapter weights train
    assert all("lora_" in n for n in trainable), sorted(n for n in trainable if "lora_" not in n)[:5]


def _randomised(root: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Give every adapter weight a distinct random value (lora_B starts at zero) and return them."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in root.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g))
    return {k: v.clone() for k, v in lora_adapter.adapter_state(root).items()}


def test_adapter_round_trips_bit_for_bit_in_peft_and_native_formats(plugin, data, tmp_path):
    cfg = compose(overrides(plugin, data, tmp_path))
    _, _, model = _module(plugin, data, tmp_path)
    root, settings = model.backbone.adapter_root(), model.settings
    assert settings is not None
    state = _randomised(root)
    assert state and all(v.abs().sum() > 0 for v in state.values())

    lora_adapter.save_peft(root, settings, tmp_path / "peft", base_model=f"{plugin.name}:tiny")
    peft_settings, peft_state = lora_adapter.load_peft(tmp_path / "peft")
    assert (peft_settings.r, peft_settings.alpha) == (settings.r, settings.alpha)
    assert set(peft_settings.target_modules) == set(settings.target_modules)
    fresh = plugin.build_backbone(cfg).adapter_root()
    lora_adapter.attach(fresh, peft_settings)
    lora_adapter.load_adapter_state(fresh, peft_state)
    again = lora_adapter.adapter_state(fresh)
    assert set(again) == set(state) and all(torch.equal(again[k], state[k]) for k in state)

    fmt = plugin.native_adapter_format()
    if fmt is None:  # the original is a transformers model with our module names: PEFT's folder is its own format
        assert plugin.peft_is_native, (f"{plugin.name} has no native adapter format (Plugin.native_adapter_format) "
                                       f"and does not say that PEFT's folder is its ecosystem's (Plugin.peft_is_native)")
        released = set()
        for ref_name in plugin.released_presets.values():
            released |= {_generic(k) for k in ref_keys(ref_name)["keys"]}
        modules = {_generic(k.split(".lora_")[0] + ".weight") for k in state}
        assert modules <= released, f"adapted modules the original does not have: {sorted(modules - released)[:5]}"
        return
    path = fmt.save(root, settings, tmp_path / "native")
    native_settings, native_state = fmt.load(path)
    assert (native_settings.r, native_settings.alpha) == (settings.r, settings.alpha)
    assert set(native_settings.target_modules) == set(settings.target_modules)
    assert set(native_state) == set(state) and all(torch.equal(native_state[k], state[k]) for k in state)


#: NF4 on every plugin; int8 on TorToiSe (GPT-2 Conv1D layers) and VALL-E (nn.Linear) - the layer code is the core's
QUANTISED = {"nf4": 0.15, "int8": 0.05}  # relative loss tolerance against the unquantised model


def test_a_quantised_base_trains_and_its_adapter_works_on_the_unquantised_model(plugin, data, tmp_path):
    for mode in ("nf4", "int8") if plugin.name in ("tortoise", "valle") else ("nf4",):
        _quantised_case(plugin, data, tmp_path / mode, mode, QUANTISED[mode])


def _quantised_case(plugin, data, tmp_path, mode, tolerance):
    """model.quantize (QLoRA): the linear layers of the frozen base held in bitsandbytes' 4-/8-bit layers, LoRA on
    top; a few steps lower the loss; the adapter loads bit for bit into the unquantised model, whose loss on the
    same batch is within ``tolerance`` (relative) of the quantised one's."""
    import bitsandbytes as bnb

    module, ds, model = _module(plugin, data, tmp_path, f"model.quantize={mode}", "lora.r=4")
    root = model.backbone.adapter_root()
    kind = bnb.nn.Linear4bit if mode == "nf4" else bnb.nn.Linear8bitLt
    assert sum(isinstance(m, kind) for m in root.modules()) >= 2
    trainable = [p for n, p in model.backbone.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n, p in model.backbone.named_parameters() if p.requires_grad)
    batch = module.features([ds[0], ds[1]], salt=0)
    backbone = model.backbone
    opt = torch.optim.AdamW(trainable, lr=3e-3)

    def loss(net, train: bool) -> torch.Tensor:  # measured without dropout, so the numbers compare
        net.train(train)
        with torch.set_grad_enabled(train):
            return net.training_losses(batch, generator=torch.Generator().manual_seed(0))["loss"]

    first = float(loss(backbone, False))
    for _ in range(6):
        opt.zero_grad()
        value = loss(backbone, True)
        assert torch.isfinite(value)
        value.backward()
        opt.step()
    quantised = float(loss(backbone, False))
    assert quantised < first
    lora_adapter.save_peft(root, model.settings, tmp_path / "peft", base_model=f"{plugin.name}:tiny")
    settings, state = lora_adapter.load_peft(tmp_path / "peft")
    cfg = compose(overrides(plugin, data, tmp_path))
    plain = plugin.build_backbone(cfg)
    lora_adapter.attach(plain.adapter_root(), settings)
    lora_adapter.load_adapter_state(plain.adapter_root(), state)
    again = lora_adapter.adapter_state(plain.adapter_root())
    assert set(again) == set(state) and all(torch.equal(again[k], state[k]) for k in state)
    unquantised = float(loss(plain, False))
    assert abs(unquantised - quantised) <= tolerance * abs(unquantised), (quantised, unquantised)
