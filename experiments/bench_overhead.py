"""Part 1 of the benchmark: framework overhead (see the docstring of ``experiments/bench.py``)."""
from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import statistics  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from bench_common import (  # noqa: E402
    SEED, _INTERLEAVE, _base_overrides, _now, _quiet_run_module, _register_configs, _verdict, _write_songs)


# ---------------------------------------------------------------------------------------------
# 1. framework overhead (in this process)
# ---------------------------------------------------------------------------------------------
class _Interleaved:
    """One hand-loop step after every framework step, and the clocks of both sides (see the docstring, part 1)."""

    def __init__(self, hand_step, warmup: int):
        self.hand_step, self.warmup = hand_step, warmup
        self.fw = [0.0, 0.0]  # (wall, CPU) seconds charged to audiotrain
        self.hand = [0.0, 0.0]
        self.counted = 0
        self._resume: tuple[float, float] | None = None

    def after_framework_step(self, step: int) -> None:
        """Called at the end of framework step ``step`` (1-based); runs hand step ``step`` on the same batch."""
        import torch

        end_fw = _now()
        count = step > self.warmup
        if count and self._resume is not None:
            for i in range(2):
                self.fw[i] += end_fw[i] - self._resume[i]
        with torch.enable_grad():
            self.hand_step(step - 1)
        end_hand = _now()
        if count:
            for i in range(2):
                self.hand[i] += end_hand[i] - end_fw[i]
            self.counted += 1
        self._resume = end_hand

    def rates(self) -> dict[str, dict[str, float]]:
        n = self.counted
        return {"fw": {"wall": n / self.fw[0], "cpu": n / max(self.fw[1], 1e-9)},
                "hand": {"wall": n / self.hand[0], "cpu": n / max(self.hand[1], 1e-9)}}




def framework_overhead(args, work: Path, seconds: float) -> dict[str, Any]:
    """Part 1 at one clip length: audiotrain rounds and bare-Lightning rounds, each interleaved with the hand loop."""
    import lightning as L
    import torch

    from audiotrain.config.compose import _compose
    from audiotrain.data.sampler import ResumableSampler
    from audiotrain.plugins import registry
    from audiotrain.train.data_setup import load_data
    from audiotrain.train.gc_freeze import long_lived_objects_frozen
    from audiotrain.train.model_setup import build_model
    from audiotrain.train.optim import build_optimizer, build_scheduler

    runmod, recorders = _quiet_run_module()
    _register_configs()
    data = work / "songs"
    _write_songs(data, count=4, seconds=seconds)
    warmup, measured = args.overhead_warmup, args.overhead_steps
    steps = warmup + measured
    repeat = max(1, -(-steps // 4))  # one epoch covers the whole run (a real dataset has far more than 4 songs)
    overrides = _base_overrides(data, work, steps, repeat)

    # Untimed first run: builds the feature cache with the tiny frozen encoders, warms every code path.
    runmod.train(_compose(overrides + [f"paths.run_dir={work / 'runs' / 'fw_first'}"]))

    # The hand loop's data: a DataLoader over the same dataset (cached features) with the same sampler (same
    # seed: the same order) and the plugin's collate - what a minimal hand-written loop iterates.
    cfg = _compose(overrides)
    plugin = registry.get("acestep")
    data = load_data(cfg, plugin, work / "runs" / "hand", "cpu", save_report=False)
    dataset, encoders = data.train, data.encoders
    assert not any(getattr(t, "loaded", False) for t in encoders if t.name in ("latents", "text")), \
        "cache should be complete"
    bs = int(cfg.dataset.batch_size)

    def loader() -> torch.utils.data.DataLoader:
        sampler = ResumableSampler(len(dataset), seed=SEED, shuffle=bool(cfg.dataset.shuffle))
        return torch.utils.data.DataLoader(dataset, batch_size=bs, sampler=sampler, num_workers=0,
                                           collate_fn=lambda b: plugin.collate([x["features"] for x in b]))

    def fresh_model() -> torch.nn.Module:
        """The model run.train builds: same seed, unused weights released, LoRA attached, the plugin's
        gradient checkpointing."""
        torch.manual_seed(SEED)
        return build_model(cfg, plugin, report=False).backbone

    backbone = fresh_model()
    backbone.train()
    params = [p for p in backbone.parameters() if p.requires_grad]
    clip = float(cfg.trainer.gradient_clip_val)
    hand_state: dict[str, Any] = {}

    def hand_start() -> None:
        """A fresh optimizer, LR schedule (the same builders and settings) and data iterator per round."""
        optimizer = build_optimizer(cfg.optimizer, params)
        hand_state.update(optimizer=optimizer, loader=iter(loader()),
                          scheduler=build_scheduler(cfg.scheduler, optimizer, steps))

    def hand_step(k: int) -> None:
        optimizer, scheduler = hand_state["optimizer"], hand_state["scheduler"]
        batch = next(hand_state["loader"])
        gen = torch.Generator().manual_seed(SEED * 1_000_003 + k)
        loss = backbone.training_losses(batch, generator=gen)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()

    def interleaved(label: str, i: int, fit) -> dict[str, dict[str, float]]:
        hand_start()
        inter = _Interleaved(hand_step, warmup)
        _INTERLEAVE[:] = [inter]
        try:
            fit()
        finally:
            _INTERLEAVE.clear()
        if inter.counted != measured:
            raise RuntimeError(f"interleaving timed {inter.counted} steps, expected {measured}")
        r = inter.rates()
        f, h = r["fw"][args.clock], r["hand"][args.clock]
        print(f"  {seconds:g} s clips, round {i + 1}/{args.rounds}: {label} {f:6.2f} steps/s, hand loop {h:6.2f} steps/s, "
              f"ratio {f / h:.3f}  ({args.clock} clock)", flush=True)
        return r

    class Bare(L.LightningModule):
        """Lightning's floor: the same model, optimizer, schedule, clipping and DataLoader in a LightningModule
        whose training_step only returns the loss, in a Trainer with nothing else (no checkpoints, callbacks,
        logging or progress bar)."""

        def __init__(self) -> None:
            super().__init__()
            self.backbone = fresh_model()

        def training_step(self, batch, batch_idx):
            gen = torch.Generator().manual_seed(SEED * 1_000_003 + batch_idx)
            return self.backbone.training_losses(batch, generator=gen)["loss"]

        def configure_optimizers(self):
            opt = build_optimizer(cfg.optimizer, [p for p in self.backbone.parameters() if p.requires_grad])
            return {"optimizer": opt, "lr_scheduler": {"scheduler": build_scheduler(cfg.scheduler, opt, steps),
                                                       "interval": "step"}}

    class BareInterleave(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            _INTERLEAVE[0].after_framework_step(trainer.global_step)

    def bare_fit() -> None:
        trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                            gradient_clip_val=clip, callbacks=[BareInterleave()])
        with long_lived_objects_frozen():  # the same garbage-collector setting as run.train
            trainer.fit(Bare(), loader())

    fw: list[dict[str, float]] = []
    hand: list[dict[str, float]] = []
    bare: list[dict[str, float]] = []
    bare_hand: list[dict[str, float]] = []
    for i in range(args.rounds):
        r = interleaved("audiotrain", i, lambda: runmod.train(
            _compose(overrides + [f"paths.run_dir={work / 'runs' / f'fw{i}'}"])))
        fw.append(r["fw"])
        hand.append(r["hand"])
        r = interleaved("bare Lightning", i, bare_fit)
        bare.append(r["fw"])
        bare_hand.append(r["hand"])
    trainable = sum(p.numel() for p in params)
    total = sum(p.numel() for p in backbone.parameters())
    frames = int(next(iter(loader()))["latents"].shape[-1])
    return {"seconds": seconds, "fw": fw, "hand": hand, "bare": bare, "bare_hand": bare_hand, "warmup": warmup,
            "measured": measured, "trainable": trainable, "total": total, "latent_frames": frames, "bs": bs}


def report_overhead(con, args, over: list[dict[str, Any]]) -> None:
    from rich.table import Table

    clock, other = args.clock, ("wall" if args.clock == "cpu" else "cpu")
    unit = "steps per CPU-second" if clock == "cpu" else "steps/s (wall clock)"
    if over:
        first = over[0]
        t = Table(title=f"1. Framework overhead - tiny ACE-Step, LoRA r=16 ({first['trainable']:,} trainable of "
                        f"{first['total']:,}), batch {first['bs']}; {first['measured']} steps after {first['warmup']} "
                        f"warm-up per round, each side interleaved step by step with the hand loop; median of "
                        f"{len(first['fw'])} rounds ({unit})")
        for col in ("clip (latent frames)", "hand loop", "bare Lightning / hand", "audiotrain / hand",
                    "audiotrain / hand per round", "(same, on the " + other + " clock)",
                    "Lightning's cost", "audiotrain's cost"):
            t.add_column(col, justify="right")
        for o in over:
            hand, fw, bare, bare_hand = ([r[clock] for r in o[k]] for k in ("hand", "fw", "bare", "bare_hand"))
            ratios = [f / h for f, h in zip(fw, hand)]
            o["ratio"] = statistics.median(ratios)
            o["bare_ratio"] = statistics.median(b / h for b, h in zip(bare, bare_hand))
            other_ratio = statistics.median(f[other] / h[other] for f, h in zip(o["fw"], o["hand"]))
            o["cost_ms"] = 1000 * statistics.median(1 / f - 1 / h for f, h in zip(fw, hand))
            o["bare_ms"] = 1000 * statistics.median(1 / b - 1 / h for b, h in zip(bare, bare_hand))
            o["step_ms"] = 1000 / statistics.median(hand)
            t.add_row(f"{o['seconds']:g} s ({o['latent_frames']})", f"{statistics.median(hand):.2f}",
                      f"{o['bare_ratio']:.3f}", f"[bold]{o['ratio']:.3f}[/]", " ".join(f"{x:.3f}" for x in ratios),
                      f"{other_ratio:.3f}", f"{o['bare_ms']:.1f} ms/step", f"{o['cost_ms']:.1f} ms/step")
        con.print(t)
        con.print("  costs are per step over the hand loop's, on a step of "
                  + ", ".join(f"{o['step_ms']:.0f} ms ({o['seconds']:g} s clips)" for o in over)
                  + ". The bare-Lightning side is a LightningModule whose training_step only returns the loss, in a "
                    "Trainer with nothing else: Lightning's own floor.")
        judged = max(over, key=lambda o: o["seconds"])
        con.print(f"  target >= 0.97 at training-length clips ({judged['seconds']:g} s; ACE-Step trains on songs of up to "
                  f"240 s): {_verdict(judged['ratio'] >= 0.97)} ({judged['ratio']:.3f}; Lightning's Trainer alone "
                  f"{judged['bare_ratio']:.3f})")
        for o in over:
            if o is not judged:
                con.print(f"  (context, {o['seconds']:g} s clips: {o['ratio']:.3f}; Lightning's Trainer alone "
                          f"{o['bare_ratio']:.3f}: its fixed {o['bare_ms']:.1f} ms is {100 * o['bare_ms'] / o['step_ms']:.1f}% "
                          f"of this short step, audiotrain's cost {o['cost_ms']:.1f} ms)")
