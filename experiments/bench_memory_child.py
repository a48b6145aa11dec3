"""One measurement of ``make bench-memory``, run in a fresh subprocess (``bench_memory.py --child SPEC``): build the
model, encode one batch, one training step, and print the heap peaks of each phase and the exact tensor bytes as
one ``RESULT_TAG`` JSON line."""
from __future__ import annotations

import json
import time
from typing import Any

import bench_memory_acestep15
from bench_common import RESULT_TAG, SEED, HeapPeak, _status_mb
from bench_memory_features import _items
from bench_memory_original import _acestep_original, _tortoise_original
from bench_memory_rows import CLIP, ROW_CLIP, _overrides, _set_depth

GB = 1e9


def child_main(spec: dict[str, Any]) -> None:
    import torch

    torch.set_num_threads(int(spec["threads"]))
    import warnings

    warnings.filterwarnings("ignore")
    # every library any row imports, before the baseline is read
    import bitsandbytes  # noqa: F401
    import peft  # noqa: F401
    import transformers  # noqa: F401
    from transformers.models.hubert import modeling_hubert  # noqa: F401
    from transformers.models.umt5 import modeling_umt5  # noqa: F401

    from audiotrain.config import resolvers
    from audiotrain.plugins import registry

    resolvers.register()
    registry.register_configs()
    acestep15 = spec["plugin"] in bench_memory_acestep15.SYSTEMS
    if acestep15:
        bench_memory_acestep15.import_modules()
    else:
        __import__(f"audiotrain_{spec['plugin']}.backbone")
    heap = HeapPeak()
    t0 = time.perf_counter()
    heap_base, rss_base = heap.current(), _status_mb("VmRSS")
    heap.reset()
    run = (bench_memory_acestep15.step if acestep15 else _plugin_step)(spec, heap)
    model, opt, phases = run["model"], run["opt"], run["phases"]
    state_bytes = 0
    for st in opt.state.values():
        for v in st.values():
            if isinstance(v, torch.Tensor):
                state_bytes += v.numel() * v.element_size()
    params = [p for p in model.parameters() if p.device.type != "meta"]  # meta: released, never allocated
    trainable = [p for p in params if p.requires_grad]
    gb = (lambda v: (v - heap_base) * 2**20 / GB if heap_base is not None and v is not None else None)
    result = {
        **spec, "preset_key": run["preset"], "loss": run["loss"],
        "heap_peak_gb": gb(max(phases.values())) if heap_base is not None else None,
        **{f"heap_{k}_gb": gb(v) for k, v in phases.items()},
        "heap_built_gb": gb(run["heap_built"]),
        "rss_peak_gb": (_status_mb("VmHWM") - rss_base) * 2**20 / GB,
        "param_bytes": sum(p.numel() * p.element_size() for p in params),
        "params": sum(p.numel() for p in params), "trainable": sum(p.numel() for p in trainable),
        "trainable_bytes": sum(p.numel() * p.element_size() for p in trainable),
        "grad_bytes": run["grad_bytes"], "state_bytes": state_bytes,
        "build_s": run["t_built"] - t0, "encode_s": run["t_encoded"] - run["t_built"],
        "step_s": run["t_step"] - run["t_built"], **run["extra"],
    }
    print(RESULT_TAG + json.dumps(result), flush=True)


def _plugin_step(spec: dict[str, Any], heap: HeapPeak) -> dict[str, Any]:
    """A plugin's measurement: the framework's build_model, optimizer, collate and training_losses."""
    import torch

    from audiotrain.config.compose import _compose
    from audiotrain.plugins import registry
    from audiotrain.train.model_setup import build_model
    from audiotrain.train.optim import build_optimizer, embedding_weights
    from audiotrain.train.param_groups import torch_param_groups

    plugin_name, row, depth = spec["plugin"], spec["row"], int(spec["depth"])
    plugin = registry.get(plugin_name)
    preset = _set_depth(plugin_name, depth, row)
    if plugin_name == "valle":  # the EnCodec decoder only renders samples (never built in a step): no folder
        from audiotrain_valle import encoders as valle_encoders

        valle_encoders.codec_factory = lambda cfg: (None, None)
    cfg = _compose(_overrides(plugin_name, preset, row))
    if row == "original" and plugin_name == "acestep":
        # the original trainer keeps every weight (nothing released): the framework's release step is skipped
        from audiotrain.models.backbone import Backbone

        from audiotrain_acestep.backbone import ACEStepBackbone

        ACEStepBackbone.release_unused_weights = Backbone.release_unused_weights
    built = build_model(cfg, plugin, report=False)
    backbone = built.backbone
    backbone.train()
    encoders: dict[str, int] = {}
    encode = None
    if row == "original" and plugin_name == "acestep":
        from audiotrain_acestep.encoders import transformer_config

        encoders, encode = _acestep_original(CLIP[plugin_name], transformer_config(cfg))
    elif row == "original" and plugin_name == "tortoise":
        encoders, encode = _tortoise_original(cfg)
    opt = build_optimizer(cfg.optimizer, torch_param_groups(backbone, cfg.optimizer),
                          full_state=embedding_weights(backbone))
    heap_built = heap.current()
    t_built = time.perf_counter()
    # the peak of each phase (build, per-step encoding, the step), so each can be extrapolated on its own
    phases = {"build": heap.peak()}
    heap.reset()

    g = torch.Generator().manual_seed(SEED)
    items = [encode()] if encode is not None else _items(plugin_name, ROW_CLIP.get(row, CLIP[plugin_name]), g)
    t_encoded = time.perf_counter()
    phases["encode"] = heap.peak()
    heap.reset()
    batch = plugin.collate(items)
    gen = torch.Generator().manual_seed(SEED)
    backbone.training_progress(0, 1000)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = backbone.training_losses(batch, generator=gen)
    loss = losses["loss"]
    loss.backward()
    trainable = [p for p in backbone.parameters() if p.requires_grad]
    grad_bytes = sum(p.grad.numel() * p.grad.element_size() for p in trainable if p.grad is not None)
    clip = float(cfg.trainer.gradient_clip_val or 0)
    if clip:
        torch.nn.utils.clip_grad_norm_(trainable, clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    t_step = time.perf_counter()
    phases["step"] = heap.peak()
    return {"model": backbone, "opt": opt, "phases": phases, "preset": preset, "loss": float(loss.detach()),
            "heap_built": heap_built, "grad_bytes": grad_bytes, "t_built": t_built, "t_encoded": t_encoded,
            "t_step": t_step, "extra": {"released": built.released, "encoders": encoders,
                                        "held_bf16": built.held_bf16, "quantised": built.quantised}}
