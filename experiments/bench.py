"""audiotrain benchmark: ratios measured side by side in one run (run by ``make bench``).

1. Framework overhead - audiotrain steps/s / a minimal hand-written PyTorch loop's steps/s, on the
   tiny ACE-Step backbone with LoRA r=16 on the default targets, fed the same cached features.
   The audiotrain side is the real path: ``audiotrain.train.run.train(cfg)`` (TrainModule inside a
   lightning.Trainer, DataLoader over AudioDataset + FeatureCache, our callbacks, clip 0.5, AdamW from
   our builder) with tracking=none. The hand loop uses the same model (same seeded init, same LoRA attach),
   the same optimizer and LR-schedule builders, the same clipping and the same batches: a plain DataLoader
   over the same dataset and sampler, collated by the plugin.
   The two run side by side, interleaved step by step: right after every audiotrain step (inside the first
   of our callbacks) the hand loop does one step, and the clock is split between them - the framework's share
   of every cycle runs from the end of one hand step to the end of the next framework step, so everything
   Lightning, the data path and our callbacks do in between is charged to audiotrain. This VM's speed drifts
   by 10-20% over seconds; at one-step granularity the drift hits both sides alike (round after round
   measurements did not resolve a 3% difference). Steps after a warm-up are timed; the reported ratio is the
   median over rounds (each a fresh ``run.train``). Target >= 0.97.

2. Feature cache - cached / on-the-fly steps/s and peak RSS, on a scaled-down ACE-Step whose frozen
   encoders keep the release's proportions to the transformer (release: transformer 3.31 B params,
   DC-AE 157 M + vocoder 103 M + UMT5 encoder 281 M = 0.164 of it). Every width of the release is divided
   by ``--scale`` (depths kept), so parameter counts - and, for convolutions and per-token layers,
   compute at a given audio length - keep their proportions. Each mode trains in a fresh subprocess
   (``--mode cached|onthefly``) through ``run.train``; the cache is filled beforehand by a separate
   ``--mode prepare`` subprocess, so the cached run never builds the frozen encoders (checked). Peak
   memory = ``ru_maxrss`` of each subprocess. Targets: >= 1.5x the speed, <= 0.6x the memory.

Clocks: with one torch thread (the default) every rate is measured on this process's CPU time, which equals
wall-clock steps/s on an idle machine but is barely moved by other jobs (the data loading and encoding run
in the same process: num_workers=0); the wall-clock ratios are printed too. With --threads > 1 the wall
clock is used. (Two OpenMP threads on a 2-core machine that runs anything else spin-wait so much that the
tiny model's steps get ~10x slower: that is why one thread is the default.)

A benchmark never fails the build: missed targets exit 0 (a crash of the benchmark itself does not).

Usage: ``python experiments/bench.py [--threads N] [--rounds N] [--seconds S] [--only overhead|cache]``
"""
from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

RESULT_TAG = "BENCH_RESULT "
_RECORDERS: list[Any] = []  # every MetricsToTracker run.train creates (their per-step timing)
SEED = 42

# Release parameter counts (presets.py, dcae_presets.py docstrings; umt5-base encoder).
RELEASE = {"transformer": 3_305_659_264, "dcae": 156_812_426, "vocoder": 103_005_138, "umt5": 281_000_000}


# ---------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------
def _setup_torch(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")


def _quiet_run_module():
    """run.train's console, progress bar and per-step timing, captured instead of printed."""
    from audiotrain.train import callbacks as cb
    from audiotrain.train import run as runmod

    runmod.console.quiet = True
    runmod._progress = lambda rows, desc: rows
    if not getattr(cb.MetricsToTracker, "_bench_recording", False):
        base = cb.MetricsToTracker

        class Recording(base):  # the same callback, plus a (step, wall, cpu) mark at the end of every step
            # (first in run.train's callback list: everything the framework does after it counts as its next step)
            _bench_recording = True

            def __init__(self, tracker):
                super().__init__(tracker)
                self.marks: list[tuple[int, float, float]] = []
                _RECORDERS.append(self)

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
                if not self.marks or self.marks[-1][0] != trainer.global_step:
                    self.marks.append((trainer.global_step, *_now()))
                    if _INTERLEAVE:  # part 1: the hand loop's step, between this step and the next
                        _INTERLEAVE[0].after_framework_step(trainer.global_step)

        cb.MetricsToTracker = Recording
    return runmod, _RECORDERS


def _register_configs() -> None:
    from audiotrain.config import resolvers
    from audiotrain.plugins import registry

    resolvers.register()
    registry.register_configs()


def _now() -> tuple[float, float]:
    """(wall clock, this process's CPU time). With one torch thread and data loading in the process, CPU-time
    steps/s equals wall-clock steps/s on an idle machine, and other jobs on the machine barely move it."""
    return time.perf_counter(), time.process_time()


def _rates(steps: int, start: tuple[float, float], end: tuple[float, float]) -> dict[str, float]:
    return {"wall": steps / (end[0] - start[0]), "cpu": steps / max(end[1] - start[1], 1e-9)}


def _steps_per_s(marks: list[tuple[int, float, float]], warmup: int) -> dict[str, float]:
    """Steady-state steps/s from the end of step ``warmup`` to the end of the last step."""
    if warmup < 1 or len(marks) <= warmup:
        raise RuntimeError(f"need at least one warm-up step and one step after it (got {len(marks)} steps)")
    start, end = marks[warmup - 1], marks[-1]
    return _rates(end[0] - start[0], start[1:], end[1:])


def _write_songs(folder: Path, count: int, seconds: float) -> None:
    """Synthetic songs, all of the same length (so every batch has the same shape)."""
    from audiotrain.data.synth import LYRICS_EN, SongSpec, write_song_folder

    leads = ["synthesizer", "piano"]  # the plucked-string timbre is a slow Python loop; not needed here
    specs = [SongSpec(name=f"bench_song_{i:02d}", bpm=[96, 120, 128, 110][i % 4], root=[9, 0, 7, 2][i % 4],
                      minor=i % 2 == 0, lead=leads[i % 2], seconds=seconds, lyrics=LYRICS_EN[i % len(LYRICS_EN)])
             for i in range(count)]
    write_song_folder(folder, specs)


def _base_overrides(data: Path, work: Path, steps: int, repeat: int) -> list[str]:
    return [
        "model=acestep", "model.preset=tiny", f"data={data}", "tracking=none", f"seed={SEED}",
        "trainer.accelerator=cpu", "dataset.num_workers=0", "trainer.progress_bar=false",
        "trainer.every_plot_step=0", f"trainer.max_steps={steps}", f"dataset.repeat_count={repeat}",
        f"cache_dir={work / 'cache'}", f"paths.log_dir={work / 'exps'}", "lora.r=16", "exp_name=bench",
    ]


def _loadavg() -> str:
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


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


_INTERLEAVE: list[_Interleaved] = []  # the active one, read by the Recording callback


def framework_overhead(args, work: Path, seconds: float) -> dict[str, Any]:
    """Part 1 at one clip length: audiotrain rounds and bare-Lightning rounds, each interleaved with the hand loop."""
    import lightning as L
    import torch

    from audiotrain.config.compose import _compose
    from audiotrain.data.cache import FeatureCache
    from audiotrain.data.dataset import AudioDataset
    from audiotrain.data.prepare import prepare_items, resolve_manifest
    from audiotrain.data.report import BadInputReport
    from audiotrain.data.sampler import ResumableSampler
    from audiotrain.lora import adapter as lora_adapter
    from audiotrain.lora.from_config import settings_from_cfg
    from audiotrain.plugins import registry
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
    spec = plugin.audio_spec(cfg)
    manifest = resolve_manifest(cfg.data, plugin, BadInputReport()).repeated(repeat)
    tokenizers = plugin.build_tokenizers(cfg)
    cache = FeatureCache(cfg.cache_dir, plugin.name)
    items = prepare_items(manifest, plugin, spec, tokenizers, cache, BadInputReport())
    assert not any(getattr(t, "loaded", False) for t in tokenizers if t.name in ("latents", "text")), \
        "cache should be complete"
    dataset = AudioDataset(items, plugin, spec, tokenizers, cache)
    bs = int(cfg.dataset.batch_size)

    def hand_loader():
        sampler = ResumableSampler(len(dataset), seed=SEED, shuffle=bool(cfg.dataset.shuffle))
        return iter(torch.utils.data.DataLoader(dataset, batch_size=bs, sampler=sampler, num_workers=0,
                                                collate_fn=lambda b: plugin.collate([x["features"] for x in b])))

    torch.manual_seed(SEED)
    backbone = plugin.build_backbone(cfg)
    lora_adapter.attach(backbone.adapter_root(), settings_from_cfg(cfg.lora, backbone.default_lora_targets))
    backbone.train()
    params = [p for p in backbone.parameters() if p.requires_grad]
    clip = float(cfg.trainer.gradient_clip_val)
    hand_state: dict[str, Any] = {}

    def hand_start() -> None:
        """A fresh optimizer, LR schedule (the same builders and settings) and data iterator per round."""
        optimizer = build_optimizer(cfg.optimizer, params)
        hand_state.update(optimizer=optimizer, loader=hand_loader(),
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
            torch.manual_seed(SEED)
            self.backbone = plugin.build_backbone(cfg)
            lora_adapter.attach(self.backbone.adapter_root(), settings_from_cfg(cfg.lora, self.backbone.default_lora_targets))

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
        sampler = ResumableSampler(len(dataset), seed=SEED, shuffle=bool(cfg.dataset.shuffle))
        trainer.fit(Bare(), torch.utils.data.DataLoader(dataset, batch_size=bs, sampler=sampler, num_workers=0,
                                                         collate_fn=lambda b: plugin.collate([x["features"] for x in b])))

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
    frames = int(next(hand_loader())["latents"].shape[-1])
    return {"seconds": seconds, "fw": fw, "hand": hand, "bare": bare, "bare_hand": bare_hand, "warmup": warmup,
            "measured": measured, "trainable": trainable, "total": total, "latent_frames": frames, "bs": bs}


# ---------------------------------------------------------------------------------------------
# 2. feature cache (one subprocess per mode)
# ---------------------------------------------------------------------------------------------
def scaled_presets(scale: int) -> dict[str, Any]:
    """The release architecture with every width divided by ``scale`` (depths kept), built on the tiny
    presets' keys. The vocoder head and the UMT5 vocabulary, whose shapes do not divide cleanly, are sized
    so every frozen part keeps its release share of the transformer's parameter count."""
    import torch
    from transformers import UMT5EncoderModel

    from audiotrain_acestep import text_encoder
    from audiotrain_acestep.dcae_presets import dcae_preset, vocoder_preset
    from audiotrain_acestep.music_dcae import MusicDCAE
    from audiotrain_acestep.presets import get_preset
    from audiotrain_acestep.transformer import ACEStepTransformer2DModel
    from audiotrain_acestep.vocoder import ADaMoSHiFiGANV1

    def count(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    k = int(scale)
    v1, tiny = get_preset("v1-3.5b"), get_preset("tiny")
    inner = v1["inner_dim"] // k
    head = 32 if inner % 32 == 0 else 16
    lyric = 1024 // k
    tr = {**tiny,
          "num_layers": v1["num_layers"], "attention_head_dim": head, "num_attention_heads": inner // head,
          "mlp_ratio": v1["mlp_ratio"], "speaker_embedding_dim": v1["speaker_embedding_dim"] // k,
          "text_embedding_dim": v1["text_embedding_dim"] // k, "ssl_encoder_depths": list(v1["ssl_encoder_depths"]),
          "ssl_latent_dims": [d // k for d in v1["ssl_latent_dims"]], "lyric_hidden_size": lyric,
          "lyric_num_blocks": 6, "lyric_attention_heads": max(1, lyric // 16), "lyric_linear_units": 4096 // k}
    release_dcae, release_voc = dcae_preset("v1"), vocoder_preset("v1")
    dcae = {**dcae_preset("tiny"),
            "encoder_block_out_channels": [c // k for c in release_dcae["encoder_block_out_channels"]],
            "decoder_block_out_channels": [c // k for c in release_dcae["decoder_block_out_channels"]],
            "encoder_layers_per_block": list(release_dcae["encoder_layers_per_block"]),
            "decoder_layers_per_block": list(release_dcae["decoder_layers_per_block"])}
    voc_dims = [d // k for d in release_voc["dims"]]
    umt5_base = dict(d_model=768 // k, d_kv=max(1, 64 // k), d_ff=2048 // k, num_layers=12, num_heads=12)

    with torch.device("meta"):
        n_tr = count(ACEStepTransformer2DModel(dict(tr)))
        n_dcae = count(MusicDCAE(dcae, vocoder_preset("tiny")).dcae)
        # vocoder: the release's ConvNeXt widths / k, the HiFi-GAN head's width fitted to the release share
        want_voc = RELEASE["vocoder"] / RELEASE["transformer"] * n_tr

        def vocoder(init: int) -> tuple[int, dict]:
            voc = {**vocoder_preset("tiny"), "depths": list(release_voc["depths"]), "dims": voc_dims,
                   "num_mels": voc_dims[-1], "upsample_initial_channel": 8 * init}
            return count(ADaMoSHiFiGANV1.from_config(voc)), voc

        lo, hi = 2, 128  # head width in units of 8 channels; the count grows with it: bisect
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if vocoder(mid)[0] < want_voc else (lo, mid)
        n_voc, voc = min((vocoder(lo), vocoder(hi)), key=lambda nv: abs(nv[0] - want_voc))
        # UMT5: the release's widths / k, the vocabulary sized to the release share (umt5-base is 70% embedding)
        probe = text_encoder.tiny_umt5_config()
        for key, val in umt5_base.items():
            setattr(probe, key, val)
        n_body = count(UMT5EncoderModel(probe)) - probe.vocab_size * probe.d_model
        want_umt5 = RELEASE["umt5"] / RELEASE["transformer"] * n_tr
        vocab = max(384, round((want_umt5 - n_body) / probe.d_model))
        n_umt5 = n_body + vocab * probe.d_model
    umt5 = {**umt5_base, "vocab_size": vocab}
    return {"transformer": tr, "dcae": dcae, "vocoder": voc, "umt5": umt5,
            "params": {"transformer": n_tr, "dcae": n_dcae, "vocoder": n_voc, "umt5": n_umt5}}


def _install_presets(p: dict[str, Any]) -> None:
    """Make ``model.preset=tiny`` mean the scaled preset ``p`` in this (sub)process (plugin code unchanged)."""
    from audiotrain_acestep import dcae_presets, presets, text_encoder

    presets.PRESETS["tiny"] = p["transformer"]
    dcae_presets.DCAE_PRESETS["tiny"] = p["dcae"]
    dcae_presets.VOCODER_PRESETS["tiny"] = p["vocoder"]
    original = text_encoder.tiny_umt5_config

    def umt5_config():
        c = original()
        for key, val in p["umt5"].items():
            setattr(c, key, val)
        return c

    text_encoder.tiny_umt5_config = umt5_config


def _track_encoder_builds() -> set[str]:
    """Names of LazyTokenizers whose model gets built in this process."""
    from audiotrain.tokenizers.lazy import LazyTokenizer

    built: set[str] = set()
    original = LazyTokenizer.get

    def get(self):
        if self._inner is None:
            built.add(self.name)
        return original(self)

    LazyTokenizer.get = get
    return built


def subprocess_main(args) -> None:
    """``--mode prepare|cached|onthefly``: one job, result as one JSON line on stdout."""
    _setup_torch(args.threads)
    work = Path(args.work)
    import torch  # noqa: F401

    from audiotrain.config.compose import _compose
    # Everything either mode imports, before the "after imports" RSS is read (same baseline for both).
    from audiotrain_acestep import dcae, encoders, lyric_features, mel, music_dcae, text_encoder  # noqa: F401

    runmod, recorders = _quiet_run_module()  # imports run.py, hence lightning
    _register_configs()
    p = json.loads((work / "presets.json").read_text())
    _install_presets(p)
    built = _track_encoder_builds()
    timings = _time_encoding() if args.mode == "onthefly" else {}
    steps = args.cache_warmup + args.cache_steps
    # One pass over the songs per epoch, as with real data; the steps are long enough that epoch boundaries
    # cost nothing measurable, and FixedEvalLoss (start and end of every run) then evaluates only these songs.
    overrides = _base_overrides(work / "songs", work, steps, repeat=1)
    result: dict[str, Any] = {"mode": args.mode, "params": p["params"]}
    if args.mode == "prepare":
        from audiotrain.data.cache import FeatureCache
        from audiotrain.data.prepare import prepare_items, resolve_manifest
        from audiotrain.data.report import BadInputReport
        from audiotrain.plugins import registry

        cfg = _compose(overrides + ["cache=true"])
        plugin = registry.get("acestep")
        tokenizers = plugin.build_tokenizers(cfg)
        t = time.perf_counter()
        items = prepare_items(resolve_manifest(cfg.data, plugin, BadInputReport()), plugin, plugin.audio_spec(cfg),
                              tokenizers, FeatureCache(cfg.cache_dir, plugin.name), BadInputReport())
        result.update(items=len(items), prepare_s=time.perf_counter() - t)
    else:
        cfg = _compose(overrides + [f"cache={'true' if args.mode == 'cached' else 'false'}",
                                    f"paths.run_dir={work / 'runs' / f'{args.mode}{args.tag}'}"])
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        summary = runmod.train(cfg)
        result.update(steps=summary["steps"], steps_per_s=_steps_per_s(recorders[-1].marks, args.cache_warmup),
                      baseline_mb=baseline, peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      encoders_built=sorted(built & {"latents", "text"}),
                      encoding_ms={k: {"wall": 1000 * statistics.median(w for w, _ in v),
                                       "cpu": 1000 * statistics.median(c for _, c in v)}
                                   for k, v in timings.items() if v})
    print(RESULT_TAG + json.dumps(result), flush=True)


def _time_encoding() -> dict[str, list[tuple[float, float]]]:
    """Per-call (wall, CPU) time of each stage of on-the-fly encoding (what the cache saves every step)."""
    from audiotrain.data import dataset
    from audiotrain_acestep import dcae, lyric_features, mel, music_dcae, text_encoder

    timings: dict[str, list[tuple[float, float]]] = {}

    def timed(owner: Any, attr: str, label: str) -> None:
        fn = getattr(owner, attr)
        timings[label] = []

        def wrapper(*a, **kw):
            t = _now()
            try:
                return fn(*a, **kw)
            finally:
                t2 = _now()
                timings[label].append((t2[0] - t[0], t2[1] - t[1]))

        setattr(owner, attr, wrapper)

    timed(dataset, "load_audio", "decode mp3 + resample to 48 kHz (fixed)")
    timed(music_dcae, "resample", "resample 48 -> 44.1 kHz (fixed)")
    timed(mel.LogMelSpectrogram, "forward", "log-mel (fixed)")
    timed(dcae.DCAEEncoder, "forward", "DC-AE encoder (scaled)")
    timed(text_encoder.TextEncoder, "encode_prompts", "UMT5 (scaled)")
    timed(lyric_features.LyricTokenizerFeature, "encode", "lyric tokenizer (fixed)")
    return timings


def _run_child(args, mode: str, work: Path, tag: str = "") -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--mode", mode, "--work", str(work),
           "--threads", str(args.threads), "--songs", str(args.songs),
           "--cache-warmup", str(args.cache_warmup), "--cache-steps", str(args.cache_steps), "--tag", tag]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.child_timeout)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
    raise RuntimeError(f"bench subprocess --mode {mode} failed (exit {proc.returncode}):\n{tail}")


def feature_cache(args, work: Path) -> dict[str, Any]:
    _write_songs(work / "songs", count=args.songs, seconds=args.seconds)
    (work / "presets.json").write_text(json.dumps(scaled_presets(args.scale)))
    prep = _run_child(args, "prepare", work)
    runs: dict[str, list[dict[str, Any]]] = {"cached": [], "onthefly": []}
    for i in range(args.cache_rounds):
        order = ("cached", "onthefly") if i % 2 == 0 else ("onthefly", "cached")  # ABBA
        for mode in order:
            r = _run_child(args, mode, work, tag=str(i))
            runs[mode].append(r)
            print(f"  round {i + 1}/{args.cache_rounds} {mode:8s}: {r['steps_per_s'][args.clock]:.3f} steps/s "
                  f"({args.clock} clock), "
                  f"peak {r['peak_mb']:.0f} MB (after imports {r['baseline_mb']:.0f} MB)", flush=True)
    return {"prepare": prep, "runs": runs}


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def _verdict(ok: bool) -> str:
    return "[bold green]met[/]" if ok else "[bold red]not met[/]"


def report(args, over: list[dict[str, Any]], cache: dict[str, Any] | None, elapsed: float, load0: str) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=None if sys.stdout.isatty() else 132)
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
        con.print(f"  target >= 0.97 on training-length clips ({judged['seconds']:g} s; ACE-Step trains on songs of up to "
                  f"240 s): {_verdict(judged['ratio'] >= 0.97)} ({judged['ratio']:.3f})")
        for o in over:
            if o is not judged:
                con.print(f"  on {o['seconds']:g} s clips: {o['ratio']:.3f}; Lightning's Trainer alone reaches "
                          f"{o['bare_ratio']:.3f} there (its fixed cost is {o['bare_ms']:.1f} of the {o['step_ms']:.0f} ms "
                          f"step; audiotrain adds {o['cost_ms'] - o['bare_ms']:.1f} ms)")
    if cache is not None:
        runs = cache["runs"]
        p = cache["prepare"]["params"]
        n = p["transformer"]
        frozen = p["dcae"] + p["vocoder"] + p["umt5"]
        rel_frozen = (RELEASE["dcae"] + RELEASE["vocoder"] + RELEASE["umt5"]) / RELEASE["transformer"]
        con.print(f"\n2. Feature cache - scaled ACE-Step (release widths / {args.scale}): transformer {n / 1e6:.2f} M, "
                  f"DC-AE {p['dcae'] / 1e6:.2f} M ({p['dcae'] / n:.3f}, release "
                  f"{RELEASE['dcae'] / RELEASE['transformer']:.3f}), vocoder {p['vocoder'] / 1e6:.2f} M "
                  f"({p['vocoder'] / n:.3f}, release {RELEASE['vocoder'] / RELEASE['transformer']:.3f}), UMT5 "
                  f"{p['umt5'] / 1e6:.2f} M ({p['umt5'] / n:.3f}, release {RELEASE['umt5'] / RELEASE['transformer']:.3f})"
                  f"; frozen / transformer = {frozen / n:.3f} (release {rel_frozen:.3f}). "
                  f"{args.songs} songs x {args.seconds:g} s mp3, batch 1, {args.cache_steps} steps after "
                  f"{args.cache_warmup} warm-up; cache built in {cache['prepare']['prepare_s']:.1f} s by a separate process.")
        sps = {m: statistics.mean(r["steps_per_s"][clock] for r in runs[m]) for m in runs}
        sps_other = {m: statistics.mean(r["steps_per_s"][other] for r in runs[m]) for m in runs}
        peak = {m: statistics.mean(r["peak_mb"] for r in runs[m]) for m in runs}
        base = {m: statistics.mean(r["baseline_mb"] for r in runs[m]) for m in runs}
        t = Table(title="cached vs on-the-fly (each run a fresh subprocess, ABBA order, mean of runs)")
        for col in ("", unit, "peak RSS MB", "RSS after imports MB", "peak - imports MB", "frozen encoders built"):
            t.add_column(col, justify="right" if col else "left")
        for m, label in (("cached", "cached (FeatureCache)"), ("onthefly", "on the fly (cache=false)")):
            built = sorted({e for r in runs[m] for e in r["encoders_built"]})
            t.add_row(label, f"{sps[m]:.3f}", f"{peak[m]:.0f}", f"{base[m]:.0f}", f"{peak[m] - base[m]:.0f}",
                      ", ".join(built) or "none")
        speed = sps["cached"] / sps["onthefly"]
        mem = peak["cached"] / peak["onthefly"]
        net = (peak["cached"] - base["cached"]) / max(peak["onthefly"] - base["onthefly"], 1e-9)
        t.add_row("[bold]ratio cached / on the fly[/]", f"[bold]{speed:.2f}x[/]", f"[bold]{mem:.2f}x[/]", "",
                  f"{net:.2f}x", "")
        t.add_row(f"(speed ratio on the {other} clock)", f"{sps_other['cached'] / sps_other['onthefly']:.2f}x",
                  "", "", "", "")
        t.add_row("target", ">= 1.5x", "<= 0.6x", "", "(context)", "")
        con.print(t)
        con.print(f"  speed >= 1.5x: {_verdict(speed >= 1.5)}   peak memory <= 0.6x: {_verdict(mem <= 0.6)}")
        if any(r["encoders_built"] for r in runs["cached"]):
            con.print("  [bold red]the cached run built a frozen encoder: the cache was not used as intended[/]")
        if over and over[-1]["cost_ms"] > 0:
            step, cost = 1000 / sps["cached"], over[-1]["cost_ms"]
            con.print(f"  (extrapolation, not a measurement: part 1's framework cost of {cost:.1f} ms per step, "
                      f"added to this model's {step:.0f} ms cached step, would be a ratio of {step / (step + cost):.3f})")
        stages: dict[str, list[float]] = {}
        for r in runs["onthefly"]:
            for k, v in r.get("encoding_ms", {}).items():
                stages.setdefault(k, []).append(v[clock])
        if stages:
            step_ms = 1000 / sps["onthefly"]
            t = Table(title=f"on-the-fly encoding per example ({clock} ms, median per call; one call per step at "
                            f"batch 1; on-the-fly step = {step_ms:.0f} ms). 'fixed' stages do not shrink with the "
                            f"model, so they weigh more here than at full size")
            t.add_column("stage")
            t.add_column("ms", justify="right")
            t.add_column("% of step", justify="right")
            for k, v in stages.items():
                ms = statistics.mean(v)
                t.add_row(k, f"{ms:.1f}", f"{100 * ms / step_ms:.0f}%")
            con.print(t)
    con.print(f"\n{os.cpu_count()} cores, torch threads {args.threads}, ratios on the {clock} clock; load average at "
              f"start {load0}, at end {_loadavg()} (1/5/15 min); total {elapsed:.0f} s.")
    try:
        busy = float(load0.split("/")[0]) > 0.75 * (os.cpu_count() or 1)
    except ValueError:
        busy = False
    if busy:
        con.print("[yellow]The machine was busy when the benchmark started: absolute numbers are noisy; the "
                  "interleaved ratios on the CPU clock much less so. Re-run on an idle machine for reference numbers.[/]")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=("overhead", "cache"), help="run one part only")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: with 2 threads, a concurrent job on a 2-core machine makes "
                         "OpenMP spin-waits dominate and the numbers meaningless)")
    ap.add_argument("--rounds", type=int, default=3, help="part 1: rounds per side and clip length (each a fresh run)")
    ap.add_argument("--overhead-warmup", type=int, default=10, help="part 1: untimed steps per run")
    ap.add_argument("--overhead-steps", type=int, default=120, help="part 1: timed steps per run (fewer: noisier rounds)")
    ap.add_argument("--tiny-seconds", type=lambda v: [float(x) for x in v.split(",")], default=[8.0, 120.0],
                    help="part 1: audio per example, comma-separated clip lengths (default 8,120: the demo's clips and "
                         "a training-length clip; the target is judged on the longest)")
    ap.add_argument("--scale", type=int, default=16, help="part 2: release widths divided by this")
    ap.add_argument("--seconds", type=float, default=12.0, help="part 2: audio per example (both modes)")
    ap.add_argument("--songs", type=int, default=4, help="part 2: synthetic songs")
    ap.add_argument("--cache-rounds", type=int, default=2, help="part 2: 2 = cached, on-the-fly, on-the-fly, cached")
    ap.add_argument("--cache-warmup", type=int, default=2, help="part 2: untimed steps per run")
    ap.add_argument("--cache-steps", type=int, default=14, help="part 2: timed steps per run")
    ap.add_argument("--child-timeout", type=float, default=400, help="seconds before a subprocess is abandoned")
    ap.add_argument("--mode", choices=("prepare", "cached", "onthefly"), help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--tag", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.clock = "cpu" if args.threads == 1 else "wall"  # CPU time sums threads: only comparable with one
    if args.mode:
        subprocess_main(args)
        return 0

    start, load0 = time.perf_counter(), _loadavg()
    _setup_torch(args.threads)
    over: list[dict[str, Any]] = []
    cache = None
    with tempfile.TemporaryDirectory(prefix="audiotrain-bench-", ignore_cleanup_errors=True) as tmp:
        if args.only in (None, "overhead"):
            print("1. Framework overhead (tiny ACE-Step): per clip length, a first run builds the cache, then rounds "
                  "of audiotrain and of bare Lightning, each interleaved with the hand loop...", flush=True)
            for seconds in args.tiny_seconds:
                work = Path(tmp) / f"overhead_{seconds:g}s"
                work.mkdir()
                over.append(framework_overhead(args, work, seconds))
        if args.only in (None, "cache"):
            print("2. Feature cache (scaled ACE-Step): prepare subprocess, then one subprocess per run...", flush=True)
            (Path(tmp) / "cache").mkdir()
            cache = feature_cache(args, Path(tmp) / "cache")
        report(args, over, cache, time.perf_counter() - start, load0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
