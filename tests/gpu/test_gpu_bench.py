"""``make bench-gpu``: what needs a CUDA GPU, ready for a short window on one (all marked ``gpu``; skipped, with the
reason, where CUDA is absent). Results go to ``$AUDIOTRAIN_BENCH_GPU_OUT`` (JSON lines; ``experiments/bench_gpu.py``
prints them as a table).

- For each plugin's released preset with seeded random weights (the builders of ``experiments/bench_memory.py``:
  the framework's ``build_model``, the plugin's collate, one clip of its representative length): LoRA r=16 at
  bf16-mixed, steps/s over timed steps after a warm-up, and the peak CUDA memory allocated.
- ACE-Step in its original trainer's set-up (the four frozen encoders in fp32 run on every step at batch 1) the
  same way, and the ratio of the two.
- The fp16 loss-scale guard (a tiny run at precision=16-mixed through the CLI), bitsandbytes' CUDA AdamW8bit
  (8-bit state, 32-bit for embeddings) and NF4 QLoRA on CUDA, each once.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
CUDA_TORCH = ("a CUDA build of torch: .venv/bin/pip install --force-reinstall --no-deps torch==2.13.0 "
              "--index-url https://download.pytorch.org/whl/cu128")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason=f"needs a CUDA GPU and {CUDA_TORCH}")]
PLUGINS = ("acestep", "valle", "songgen", "tortoise")
WARMUP, TIMED = 2, 5


def _bench_memory():
    sys.path.insert(0, str(ROOT / "experiments"))
    import bench_memory

    return bench_memory


def record(**row) -> None:
    """One result line for experiments/bench_gpu.py (and the test log)."""
    row.setdefault("device", torch.cuda.get_device_name(0))
    print(json.dumps(row))
    out = os.environ.get("AUDIOTRAIN_BENCH_GPU_OUT")
    if out:
        with open(out, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


def _to(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to(v, device) for v in batch)
    return batch


def _lora_step(plugin_name: str, row: str = "lora"):
    """(steps/s, peak GB, loss) of the released preset's LoRA step at bf16-mixed on the GPU."""
    from audiotrain.config import resolvers
    from audiotrain.config.compose import _compose
    from audiotrain.plugins import registry
    from audiotrain.train.model_setup import build_model
    from audiotrain.train.optim import build_optimizer, embedding_weights
    from audiotrain.train.param_groups import torch_param_groups

    bm = _bench_memory()
    resolvers.register()
    registry.register_configs()
    plugin = registry.get(plugin_name)
    preset = bm._set_depth(plugin_name, bm.RELEASE_DEPTH[plugin_name], "lora")
    if plugin_name == "valle":
        from audiotrain_valle import encoders as valle_encoders

        valle_encoders.codec_factory = lambda cfg: (None, None)
    cfg = _compose(bm._overrides(plugin_name, preset, "lora"))
    backbone = build_model(cfg, plugin, report=False).backbone.cuda().train()
    opt = build_optimizer(cfg.optimizer, torch_param_groups(backbone, cfg.optimizer),
                          full_state=embedding_weights(backbone))
    g = torch.Generator().manual_seed(bm.SEED)
    encode = None
    if row == "original":
        from audiotrain_acestep.encoders import transformer_config

        _, encode = bm._acestep_original(bm.CLIP[plugin_name], transformer_config(cfg), device="cuda")
    items = None if encode else bm._items(plugin_name, bm.CLIP[plugin_name], g)
    trainable = [p for p in backbone.parameters() if p.requires_grad]
    torch.cuda.reset_peak_memory_stats()

    def step() -> float:
        batch = _to(plugin.collate([encode()] if encode else items), "cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = backbone.training_losses(batch, generator=torch.Generator(device="cuda").manual_seed(0))["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, float(cfg.trainer.gradient_clip_val or 1.0))
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    for _ in range(WARMUP):
        step()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(TIMED):
        loss = step()
    torch.cuda.synchronize()
    rate = TIMED / (time.perf_counter() - t)
    return rate, torch.cuda.max_memory_allocated() / 1e9, loss


@pytest.mark.parametrize("plugin_name", PLUGINS)
def test_lora_r16_bf16_speed_and_peak_memory_of_the_released_preset(plugin_name):
    rate, peak, loss = _lora_step(plugin_name)
    assert rate > 0 and torch.isfinite(torch.tensor(loss))
    bm = _bench_memory()
    record(test="lora", plugin=plugin_name, preset=bm.PRESET[plugin_name], clip_s=bm.CLIP[plugin_name],
           steps_per_s=rate, peak_gb=peak, loss=loss)


def test_acestep_lora_step_against_the_original_trainers_set_up():
    ours, ours_peak, _ = _lora_step("acestep")
    torch.cuda.empty_cache()
    orig, orig_peak, _ = _lora_step("acestep", "original")
    record(test="acestep_original", plugin="acestep", steps_per_s=ours, peak_gb=ours_peak,
           original_steps_per_s=orig, original_peak_gb=orig_peak, speed_ratio=ours / orig,
           memory_ratio=ours_peak / orig_peak)
    assert ours_peak < orig_peak


def test_fp16_loss_scale_guard_trains_a_tiny_run(tmp_path):
    from audiotrain.plugins import registry

    data = registry.get("acestep").example_data(tmp_path / "songs", 2)
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", AUDIOTRAIN_CACHE=str(tmp_path / "cache"))
    p = subprocess.run([sys.executable, "-m", "audiotrain.cli.main", "model=acestep", f"data={data}", "debug=smoke",
                        "precision=16-mixed", "trainer.accelerator=gpu", "trainer.max_steps=8"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(next((tmp_path / "exps").glob("logs/*/*/summary.json")).read_text())
    assert summary["steps"] == 8 and summary["completed"]
    record(test="fp16_guard", plugin="acestep", steps=summary["steps"], ok=True)


def test_bitsandbytes_cuda_adamw8bit_keeps_embeddings_32bit():
    from omegaconf import OmegaConf

    from audiotrain.train.optim import build_optimizer, embedding_weights

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Embedding(4096, 256), torch.nn.Linear(256, 4096)).cuda()
    cfg = OmegaConf.create({"name": "adamw8bit", "lr": 1e-3, "weight_decay": 0.0, "betas": [0.9, 0.999], "eps": 1e-8})
    opt = build_optimizer(cfg, list(net.parameters()), full_state=embedding_weights(net))
    before = net[1].weight.detach().clone()
    net(torch.randint(0, 4096, (8, 32), device="cuda")).pow(2).mean().backward()
    opt.step()
    assert not torch.equal(before, net[1].weight)
    assert opt.state[net[0].weight]["state1"].dtype == torch.float32
    assert opt.state[net[1].weight]["state1"].dtype == torch.uint8
    record(test="bnb_cuda_adamw8bit", ok=True)


def test_nf4_qlora_step_on_cuda():
    import bitsandbytes as bnb

    from audiotrain.lora import adapter as lora_adapter
    from audiotrain.lora.adapter import LoRASettings
    from audiotrain.lora.quantize import quantize_base

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.GELU(), torch.nn.Linear(512, 512)).cuda()
    quantize_base(net, "nf4", torch.bfloat16)
    assert isinstance(net[0], bnb.nn.Linear4bit) and net[0].weight.device.type == "cuda"
    lora_adapter.attach(net, LoRASettings(r=8, alpha=16, target_modules=["0", "2"]))
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    x = torch.randn(16, 512, device="cuda")
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = net(x).float().pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    record(test="qlora_nf4_cuda", first_loss=losses[0], last_loss=losses[-1])
