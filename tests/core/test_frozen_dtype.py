"""model.frozen_dtype: the frozen base of a bf16-mixed LoRA run held in bf16. Which weights it holds, that a
training step under CPU bf16 autocast is bit-identical with it on and off (every plugin), that the forwards outside
autocast still work, that whole-model files stay fp32, and the settings it refuses."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from audiotrain.config.validate import training_plan_problems
from audiotrain.lora import adapter as lora_adapter
from audiotrain.lora.adapter import LoRASettings
from audiotrain.lora.frozen_dtype import held_dtype, held_in_fp32, hold, resolve
from audiotrain.plugins import registry
from tests.conftest import compose

BF16 = torch.bfloat16


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 16)
        self.up = nn.Linear(16, 32)
        self.gpt = Conv1D(16, 32)  # GPT-2's (in, out) layer: 32 inputs, 16 outputs
        self.conv = nn.Conv1d(16, 16, 3, padding=1)
        self.norm = nn.LayerNorm(16)
        self.mha = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 10, bias=False)
        self.head.weight = self.emb.weight  # tied: the embedding reads it too

    def forward(self, ids):
        h = self.emb(ids)
        h = self.norm(self.gpt(self.up(h)))
        h = self.conv(h.transpose(1, 2)).transpose(1, 2)
        h = h + self.mha(h, h, h, need_weights=False)[0]
        return self.head(h)


def _net_with_lora() -> Net:
    torch.manual_seed(0)
    net = Net()
    lora_adapter.attach(net, LoRASettings(r=4, alpha=8, target_modules=["up", "conv"]))
    with torch.no_grad():  # lora_B starts at zero: give the adapter a value
        for n, p in net.named_parameters():
            if "lora_B" in n:
                p.normal_()
    return net


def test_holds_only_frozen_matrices_autocast_casts_and_keeps_the_rest():
    net = _net_with_lora()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    n = hold(net)
    dtypes = {name: p.dtype for name, p in net.named_parameters()}
    held = sorted(k for k, d in dtypes.items() if d == BF16)
    # the LoRA-wrapped up/conv base weights, the GPT-2 Conv1D; not LoRA, norms, biases, embeddings, the tied head
    # (its weight is the embedding's), nor MHA's out_proj (MultiheadAttention reads it itself)
    assert held == ["conv.base_layer.weight", "gpt.weight", "up.base_layer.weight"], held
    assert n == 16 * 32 + 16 * 16 * 3 + 32 * 16 and held_dtype(net) == BF16
    assert all(dtypes[k] == torch.float32 for k in dtypes if "lora_" in k or "norm" in k or k.endswith("bias"))
    assert dtypes["emb.weight"] == dtypes["mha.out_proj.weight"] == torch.float32
    for k in held:  # the value is the fp32 one rounded to bf16
        assert torch.equal(dict(net.named_parameters())[k], before[k].to(BF16))


def test_under_autocast_bit_identical_outside_it_computes_with_the_rounded_weights():
    ids = torch.randint(0, 10, (2, 7), generator=torch.Generator().manual_seed(1))
    plain, held = _net_with_lora(), _net_with_lora()
    hold(held)
    with torch.autocast("cpu", dtype=BF16):
        want, got = plain(ids), held(ids)
    assert torch.equal(want, got)
    want.float().square().mean().backward()
    got.float().square().mean().backward()
    grads = {n: p.grad for n, p in held.named_parameters() if p.requires_grad}
    assert grads and all(torch.equal(p.grad, grads[n]) for n, p in plain.named_parameters() if p.requires_grad)
    # outside autocast (samples, fixed-noise losses): fp32 compute with the weights' bf16 values, held again after
    rounded = _net_with_lora()
    with torch.no_grad():
        for (_, p), (_, q) in zip(rounded.named_parameters(), held.named_parameters()):
            p.copy_(q.float())
    weight = held.up.base_layer.weight
    out = held(ids)
    assert out.dtype == torch.float32 and torch.equal(out, rounded(ids))
    assert held.up.base_layer.weight is weight and weight.dtype == BF16


def test_held_in_fp32_widens_exactly_and_puts_the_same_parameters_back():
    net = _net_with_lora()
    hold(net)
    weight = net.gpt.weight
    with held_in_fp32(net) as n:
        assert n == 16 * 32 + 16 * 16 * 3 + 32 * 16
        assert net.gpt.weight.dtype == torch.float32 and torch.equal(net.gpt.weight, weight.float())
        state = net.state_dict()
    assert all(v.dtype == torch.float32 for k, v in state.items() if v.is_floating_point())
    assert net.gpt.weight is weight and weight.dtype == BF16


def test_auto_resolves_per_precision_lora_and_backend_and_bad_settings_are_one_sentence():
    assert resolve(compose(["model=acestep", "precision=bf16-mixed"])) == BF16
    assert resolve(compose(["model=acestep"])) is None  # precision=32: no autocast to cast them
    assert resolve(compose(["model=acestep", "precision=16-mixed"])) is None
    assert resolve(compose(["model=acestep", "precision=bf16-mixed", "lora=none"])) is None
    assert resolve(compose(["model=acestep", "precision=bf16-mixed", "model.frozen_dtype=fp32"])) is None
    assert resolve(compose(["model=acestep", "precision=bf16-mixed", "backend=deepspeed"])) is None
    assert training_plan_problems(compose(["model=acestep", "precision=bf16-mixed", "model.frozen_dtype=bf16"]), None) == []
    cases = {("model.frozen_dtype=bf15",): "model.frozen_dtype=bf15 is not a choice: use auto",
             ("model.frozen_dtype=bf16", "lora=none", "precision=bf16-mixed"): "model.frozen_dtype=bf16 holds the frozen "
             "base in bf16, but lora=none trains every weight",
             ("model.frozen_dtype=bf16",): "model.frozen_dtype=bf16 needs precision=bf16-mixed",
             ("model.frozen_dtype=bf16", "precision=bf16-mixed", "backend=deepspeed"):
                 "model.frozen_dtype=bf16 cannot be combined with backend=deepspeed"}
    for extra, start in cases.items():
        (problem,) = training_plan_problems(compose(["model=acestep", *extra]), None)
        assert problem.startswith(start) and problem.count(". ") == 0 and problem.endswith("."), problem


PLUGINS = sorted(registry.discover())


@pytest.mark.slow  # four plugins, each its data and two tiny models: ~2 min
@pytest.mark.parametrize("name", PLUGINS)
def test_a_training_step_is_bit_identical_with_the_frozen_base_in_bf16(name, tmp_path):
    """Every plugin's tiny LoRA: the loss and every LoRA gradient of a step under CPU bf16 autocast, equal bit for
    bit with model.frozen_dtype=bf16 (auto at bf16-mixed) and fp32, and the eval-mode loss outside autocast (a
    fixed-noise loss) within 1% (fp32 compute with the weights rounded to bf16: relative error <= 2^-9 each)."""
    from tests.contract.test_plugin_contract import _module

    compose([])
    plugin = registry.get(name)
    data = plugin.example_data(tmp_path / "data", count=2)
    runs = {}
    for mode in ("fp32", "auto"):
        torch.manual_seed(0)
        module, ds, model = _module(plugin, data, tmp_path / mode, "precision=bf16-mixed", f"model.frozen_dtype={mode}")
        backbone = model.backbone
        with torch.no_grad():  # lora_B starts at zero: give the adapter a value so every gradient moves
            for n, p in backbone.named_parameters():
                if "lora_B" in n:
                    p.copy_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
        batch = module.features([ds[0], ds[1]], salt=0)
        backbone.train()
        with torch.autocast("cpu", dtype=BF16):
            loss = backbone.training_losses(batch, generator=torch.Generator().manual_seed(0))["loss"]
        loss.backward()
        grads = {n: p.grad.clone() for n, p in backbone.named_parameters() if p.requires_grad}
        backbone.eval()
        with torch.no_grad():
            plain = float(backbone.training_losses(batch, generator=torch.Generator().manual_seed(0))["loss"])
        runs[mode] = (model, float(loss.detach()), grads, plain)
    (off, loss_off, grads_off, plain_off), (on, loss_on, grads_on, plain_on) = runs["fp32"], runs["auto"]
    # the tiny presets' embeddings are large beside their matrices (VALL-E tiny: 0.16 held; at release size ~0.5-0.9)
    assert off.held_bf16 == 0 and on.held_bf16 > 0.1 * (on.total - on.trainable), (on.held_bf16, on.total)
    assert on.held_bf16 == sum(p.numel() for p in on.backbone.parameters() if p.dtype == BF16)
    assert all(p.dtype == torch.float32 for p in on.backbone.parameters() if p.requires_grad)
    assert loss_on == loss_off
    assert grads_on.keys() == grads_off.keys() and all("lora_" in k for k in grads_on)
    differ = [k for k in grads_on if not torch.equal(grads_on[k], grads_off[k])]
    assert differ == [], differ[:5]
    assert any(float(g.abs().sum()) > 0 for g in grads_on.values())
    assert abs(plain_on - plain_off) <= 0.01 * abs(plain_off), (plain_on, plain_off)


def test_the_description_line_says_the_base_is_held_in_bf16(tmp_path):
    from audiotrain.train.model_setup import build_model, describe

    cfg = compose(["model=acestep", "model.preset=tiny", "precision=bf16-mixed", f"paths.log_dir={tmp_path}"])
    built = build_model(cfg, registry.get("acestep"), report=False)
    line = describe(built, "acestep", "tiny")
    assert f"; {built.held_bf16:,} frozen base parameters held in bf16 (model.frozen_dtype=auto: a bf16-mixed LoRA " \
           "run, whose autocast computes them in bf16 anyway)" in line and built.held_bf16 > 0
    off = build_model(compose(["model=acestep", "model.preset=tiny"]), registry.get("acestep"), report=False)
    assert off.held_bf16 == 0 and "bf16" not in describe(off, "acestep", "tiny")


def test_tortoise_whole_model_file_is_fp32_with_the_lora_merged_in_fp32(tmp_path):
    """TorToiSe writes the whole UnifiedVoice (``<step>_gpt.pth``) at every save: fp32 like a fp32 run's, its base
    the held bf16 values widened exactly plus the LoRA delta; the training model keeps its bf16 base."""
    from audiotrain.train.model_setup import adapter_writer, build_model

    compose([])
    plugin = registry.get("tortoise")
    cfg = compose(["model=tortoise", "model.preset=tiny", "precision=bf16-mixed", "lora.r=4",
                   f"paths.log_dir={tmp_path}"])
    built = build_model(cfg, plugin, report=False)
    root = built.backbone.adapter_root()
    with torch.no_grad():
        for n, p in root.named_parameters():
            if "lora_B" in n:
                p.copy_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
    name, layer = next((n, m) for n, m in root.named_modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer"))
    base = layer.base_layer.weight
    assert base.dtype == BF16
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    delta = (b @ a).t() * layer.scaling["default"]  # GPT-2 Conv1D: (in, out), fan_in_fan_out
    adapter_writer(built, plugin, cfg)(tmp_path / "save", step=3)
    state = torch.load(tmp_path / "save" / "3_gpt.pth", map_location="cpu", weights_only=True)
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float32}
    merged = state[f"{name}.weight"]
    assert (merged - (base.float() + delta)).abs().max() < 1e-6 and not torch.equal(merged, base.float())
    assert layer.base_layer.weight is base and base.dtype == BF16


@pytest.mark.slow  # three tiny ACE-Step runs with samples and audio eval, a merge: ~2 min
def test_resume_is_bit_identical_and_every_forward_outside_the_step_works(tiny_cfg, tmp_path):
    """bf16-mixed, the frozen base held in bf16 (auto): the fixed-noise loss, the training-time samples and the
    in-process audio eval run outside autocast; a run stopped at step 3 and resumed ends bit-identical to an
    uninterrupted one; ``audiotrain merge`` writes fp32 weights."""
    from safetensors.torch import load_file

    from audiotrain.cli.adapters import merge
    from audiotrain.train.run import train

    def cfg(*extra, run):
        return tiny_cfg("precision=bf16-mixed", "trainer.every_n_train_steps=3", "trainer.every_plot_step=3",
                        "model.sample_steps=2", "trainer.sample_prompts=1", "trainer.eval_audio=true", *extra, run=run)

    full = train(cfg("trainer.max_steps=6", run="full"))
    half = train(cfg("trainer.max_steps=3", run="half"))
    resumed = train(cfg("trainer.max_steps=6", f"ckpt_path={half['run_dir']}/checkpoints/last.ckpt", run="x"))
    assert resumed["steps"] == full["steps"] == 6 and resumed["last_loss"] == full["last_loss"]
    assert resumed["train_fixed_loss"][-1] == full["train_fixed_loss"][-1] and full["train_fixed_loss"][-1][0] == 6
    assert len(full["eval_mel_distance"]) >= 2 and all(v == v for _, v in full["eval_mel_distance"])  # finite, not NaN
    samples = sorted((tmp_path / "logs" / "full").rglob("pred_0_*.wav"))
    assert len(samples) >= 2, samples
    a = load_file(f"{full['adapter_dir']}/peft/adapter_model.safetensors")
    b = load_file(f"{resumed['adapter_dir']}/peft/adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert {v.dtype for v in a.values()} == {torch.float32}
    assert merge([full["run_dir"], "--out", str(tmp_path / "merged")]) == 0
    (weights,) = (tmp_path / "merged").rglob("*.safetensors")
    assert {v.dtype for v in load_file(str(weights)).values() if v.is_floating_point()} == {torch.float32}
