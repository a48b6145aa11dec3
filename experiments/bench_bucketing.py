"""Part 5 of the benchmark: training steps/s with duration buckets vs random order (``--only bucketing``).

For VALL-E, SongGen and TorToiSe, on part 4's corpus (``bench_padding.corpus``: 2,000 clip lengths with each
system's length mix): the batches ``BucketBatchSampler`` makes with the plugin's composed batch size, once with
``dataset.order=duration`` and once in random order (epoch 0, seed 1, as part 4). ``--bucket-steps`` batches
are drawn uniformly (seeded) from each order's epoch and trained on, one bucketed step then one random step,
interleaved so the machine's drift hits both alike; both orders have the same number of steps per epoch, so the
steps/s ratio is the epoch's speed-up. The model is the plugin's released architecture at part 2's scaled
proportions (``bench_scaled``, widths / ``--scale``), built by the framework's ``build_model`` (LoRA r=16 on the
default targets, gradient checkpointing as the plugin's default), its optimizer by ``build_optimizer``; a step
is the plugin's ``collate`` of cached features (random values with the cache's shapes, ``bench_memory._items``)
+ ``training_losses`` + backward + clipping + optimizer step: the framework's training step without the data
loader, which the cache makes a lookup. TorToiSe runs with ``model.tortoise_compat=false``: with AIVC's
``true`` every clip is padded to 11.6 s and the order cannot matter (part 4). One subprocess per plugin.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from bench_common import RESULT_TAG, SEED, _now, _register_configs, _setup_torch, _verdict

CORPORA = {"valle": ("speech", 1.0, 20.0), "songgen": ("songs", 2.0, 30.0), "tortoise": ("speech", 0.6, 11.6)}


def bucket_main(args) -> None:
    """``--mode bucket --case PLUGIN``: interleaved bucketed / random training steps, result as one JSON line."""
    _setup_torch(args.threads)
    import torch

    import bench_scaled
    from audiotrain.config.compose import _compose
    from audiotrain.data.batching import BucketBatchSampler, padding_waste
    from audiotrain.plugins import registry
    from audiotrain.train.model_setup import build_model
    from audiotrain.train.optim import build_optimizer, embedding_weights
    from audiotrain.train.param_groups import torch_param_groups
    from bench_memory import _items
    from bench_padding import corpus

    plugin_name = args.case
    _register_configs()
    p = json.loads((Path(args.work) / "presets.json").read_text())
    bench_scaled.install(plugin_name, p)
    batch = max(2, int(_compose([f"model={plugin_name}", "data=unused"]).dataset.batch_size))  # the released batch
    overrides = [f"model={plugin_name}", "model.preset=tiny", "data=unused", "tracking=none", "trainer.accelerator=cpu",
                 f"seed={SEED}", "lora.r=16", f"dataset.batch_size={args.bucket_batch or batch}"]
    if plugin_name == "tortoise":
        overrides.append("model.tortoise_compat=false")
    cfg = _compose(overrides)
    batch = int(cfg.dataset.batch_size)
    plugin = registry.get(plugin_name)
    backbone = build_model(cfg, plugin, report=False).backbone  # LoRA attached, gradient checkpointing as configured
    backbone.train()
    opt = build_optimizer(cfg.optimizer, torch_param_groups(backbone, cfg.optimizer),
                          full_state=embedding_weights(backbone))
    trainable = [q for q in backbone.parameters() if q.requires_grad]
    widths = {}
    if plugin_name == "songgen":
        widths = {"text": p["model"]["text_encoder"]["d_model"], "mert": p["model"]["mert"]["hidden_size"]}
    full = corpus(*CORPORA[plugin_name])
    # an epoch over batch x steps clips drawn from the corpus: both orders then train on the same clips in the
    # same number of steps, so their steps/s ratio is the epoch's speed-up (no sampling noise between them)
    durations = random.Random(SEED).sample(full, batch * args.bucket_steps)
    groups = [f"g{i % 20}" for i in range(len(durations))]
    plans = {order: BucketBatchSampler(durations, groups, order=order, batch_size=batch, seed=1).epoch_batches(0)
             for order in ("duration", "random")}
    g = torch.Generator().manual_seed(SEED)
    clip = float(cfg.trainer.gradient_clip_val or 0)

    def step(indices: list[int], i: int) -> tuple[float, float]:
        items = [_items(plugin_name, durations[j], g, widths)[0] for j in indices]
        t = _now()
        out = plugin.collate(items)
        backbone.training_progress(i, 1000)
        loss = backbone.training_losses(out, generator=torch.Generator().manual_seed(i))["loss"]
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(trainable, clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        t2 = _now()
        return t2[0] - t[0], t2[1] - t[1]

    step(plans["random"][0], 0)  # warm-up (first-call costs), untimed
    times: dict[str, list[tuple[float, float]]] = {"duration": [], "random": []}
    for i in range(len(plans["random"])):
        for order in (("duration", "random") if i % 2 == 0 else ("random", "duration")):
            if i < len(plans[order]):
                times[order].append(step(plans[order][i], i + 1))
    result = {"plugin": plugin_name, "batch": batch, "steps": args.bucket_steps, "clips": len(durations),
              "audio_s": sum(durations)}
    for order, ts in times.items():
        result[order] = {"wall": len(ts) / sum(w for w, _ in ts), "cpu": len(ts) / max(sum(c for _, c in ts), 1e-9),
                         "steps": len(ts), "waste": padding_waste(plans[order], durations)}
    print(RESULT_TAG + json.dumps(result), flush=True)


def bucketing(args, work: Path, run_child) -> list[dict[str, Any]]:
    """One subprocess per plugin (``run_child(mode, case, work)``), on part 2's scaled presets."""
    import time

    import bench_scaled

    out = []
    for plugin in CORPORA:
        t = time.perf_counter()
        folder = work / plugin
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "presets.json").write_text(json.dumps(bench_scaled.presets(plugin, args.scale)))
        r = run_child("bucket", plugin, folder)
        r["run_s"] = time.perf_counter() - t
        out.append(r)
        print(f"  {plugin}: batch {r['batch']}, duration buckets {r['duration'][args.clock]:.3f} steps/s, random "
              f"{r['random'][args.clock]:.3f} steps/s ({args.clock} clock, {r['run_s']:.0f} s)", flush=True)
    return out


def report_bucketing(con, args, rows: list[dict[str, Any]] | None) -> None:
    if not rows:
        return
    con.print(f"\n5. Training steps/s, duration buckets vs random order (an epoch over batch x {rows[0]['steps']} "
              f"clips drawn from part 4's corpus, the released batch sizes, scaled models: widths / {args.scale}; the "
              f"two orders' steps interleaved; {args.clock} clock)")
    for r in rows:
        d, x = r["duration"], r["random"]
        speed = d[args.clock] / x[args.clock]
        con.print(f"   {r['plugin']:9s} batch {r['batch']:3d}, {r['clips']} clips ({r['audio_s']:.0f} s): duration "
                  f"buckets {d[args.clock]:.3f} steps/s (padding {d['waste']:.3f}), random order {x[args.clock]:.3f} "
                  f"steps/s (padding {x['waste']:.3f}): [bold]{speed:.2f}x[/] (bucketed faster: {_verdict(speed > 1.0)}; "
                  f"wall clock {d['wall'] / x['wall']:.2f}x; part run time {r['run_s']:.0f} s)")
    con.print("   Padding here is of these epochs' batches (part 4 gives it on all 2,000 clips). Both orders train the "
              "same clips in the same number of steps: the ratio is the epoch's speed-up.")
