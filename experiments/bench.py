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
   median over rounds (each a fresh ``run.train``). A bare Lightning Trainer (a LightningModule that only
   returns the loss) is measured the same way: Lightning's own floor. Both sides use the plugin's defaults
   (ACE-Step: gradient checkpointing). Clip lengths: the demo's 8 s and a training-length 120 s; the target
   (>= 0.97) is judged at the longest, the others are printed as context.

2. Feature cache - cached / on-the-fly steps/s and peak memory, on a scaled-down ACE-Step whose frozen
   encoders keep the release's proportions to the transformer (release: transformer 3.31 B params,
   DC-AE 157 M + vocoder 103 M + UMT5 encoder 281 M + the REPA teachers MERT 315 M and mHuBERT 94 M = 0.287
   of it). Every width of the release is divided by ``--scale`` (depths kept), so parameter counts - and, for
   convolutions and per-token layers, compute at a given audio length - keep their proportions. The setup is
   ACE-Step's trainer.py: REPA on (ssl_coeff 1.0; scaled HuBERT-shaped teachers written to local folders,
   ``--no-repa`` leaves them out) and gradient checkpointing (the plugin's default, as trainer.py always does).
   Each mode trains in a fresh subprocess (``--mode cached|onthefly``) through ``run.train``; the cache is
   filled beforehand by a separate ``--mode prepare`` subprocess, so the cached run never builds the frozen
   encoders (checked). Peak memory = ``ru_maxrss`` of each subprocess, also shown net of the RSS after every
   library either mode imports (the same baseline for both). Targets: >= 1.5x the speed, <= 0.6x the memory.

   The same machinery measures VALL-E, SongGen and TorToiSe (``--only cache-valle|cache-songgen|cache-tortoise``,
   ``experiments/bench_cache_plugins.py``): each released architecture with widths / ``--scale`` and its frozen
   encoders (EnCodec + espeak-ng; X-Codec, flan-t5, MERT; DVAE + mels) fitted to their release share of the
   trainable parameters (``experiments/bench_scaled.py`` says which sizes and why), on the plugin's example data.
   Same targets; a missed one prints its measured cause (the encoding's share of the step, the heap the cache
   frees against the peak).

2b. SongGen's X-Codec encoding, ``encode_batch`` at batch 8 ÷ one clip at a time (``--only xcodec-batch``,
   ``experiments/bench_xcodec.py``; X-Codec widths / ``--xcodec-scale``). Target: >= 3x.

3. Data preparation - the cache build with every core ÷ with one (``dataset.prepare_workers``), and the decode
   stage ÷ a bare soundfile + soxr loop over the same files, as the preparation's workers run it (glibc malloc's
   thresholds fixed, ``audiotrain.data.allocator``) and with glibc's defaults, each loop's page faults counted
   (``experiments/bench_prepare.py``). Targets: >= 1.7 on 2 cores, >= 0.8 (as the workers run).

4. Padding waste - positions the token models compute ÷ real ones, duration buckets vs random order
   (``experiments/bench_padding.py``). Target: <= 1.10 bucketed.

5. Bucketing speed - training steps/s of the scaled VALL-E, SongGen and TorToiSe with duration buckets vs random
   order on an epoch of part 4's corpus, the two orders' steps interleaved (``experiments/bench_bucketing.py``).

Every part prints its run time.

Clocks: with one torch thread (the default) every rate is measured on this process's CPU time, which equals
wall-clock steps/s on an idle machine but is barely moved by other jobs (the data loading and encoding run
in the same process: num_workers=0); the wall-clock ratios are printed too. With --threads > 1 the wall
clock is used. (Two OpenMP threads on a 2-core machine that runs anything else spin-wait so much that the
tiny model's steps get ~10x slower: that is why one thread is the default.)

A benchmark never fails the build: missed targets exit 0 (a crash of the benchmark itself does not).

Usage: ``python experiments/bench.py [--threads N] [--rounds N] [--seconds S] [--only PART]`` (``--help`` lists the parts)
"""
from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from bench_bucketing import bucket_main, bucketing, report_bucketing  # noqa: E402
from bench_cache import cases, feature_cache, subprocess_main  # noqa: E402
from bench_cache_report import report_cache  # noqa: E402
from bench_common import _loadavg, _setup_torch  # noqa: E402
from bench_overhead import framework_overhead, report_overhead  # noqa: E402
from bench_padding import padding, report_padding  # noqa: E402
from bench_prepare import data_preparation, prepare_main, report_preparation  # noqa: E402
from bench_xcodec import report_xcodec, xcodec_batch  # noqa: E402


PARTS = ("overhead", "cache", "cache-valle", "cache-songgen", "cache-tortoise", "xcodec-batch", "prepare", "padding",
         "bucketing")


def report(args, over: list[dict[str, Any]], cache: dict[str, Any] | None, elapsed: float, load0: str,
           prep: dict[str, Any] | None = None, pad: list | None = None, plugin_caches: list | None = None,
           xcodec: dict[str, Any] | None = None, buckets: list | None = None) -> None:
    from rich.console import Console

    con = Console(width=None if sys.stdout.isatty() else 132)
    clock = args.clock
    report_overhead(con, args, over)
    report_cache(con, args, over, cache)
    for c in plugin_caches or []:
        report_cache(con, args, over, c, number="2")
    report_xcodec(con, args, xcodec)
    report_preparation(con, args, prep)
    report_padding(con, pad)
    report_bucketing(con, args, buckets)
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
    ap.add_argument("--only", choices=PARTS, help="run one part only")
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
    ap.add_argument("--no-repa", action="store_true", help="part 2: without the (scaled) REPA teachers MERT and mHuBERT")
    ap.add_argument("--plugin-batch", type=int, default=2, help="part 2 for VALL-E / SongGen / TorToiSe: batch size")
    ap.add_argument("--plugin-clips", type=int, default=8, help="part 2 for VALL-E / SongGen / TorToiSe: example clips")
    ap.add_argument("--xcodec-scale", type=int, default=4, help="part 2b: X-Codec's release widths divided by this")
    ap.add_argument("--xcodec-seconds", type=float, default=10.0, help="part 2b: seconds per clip")
    ap.add_argument("--xcodec-clips", type=int, default=8, help="part 2b: clips per round (batch 8 against 1)")
    ap.add_argument("--xcodec-rounds", type=int, default=3, help="part 2b: interleaved rounds")
    ap.add_argument("--bucket-steps", type=int, default=6, help="part 5: timed steps per order and plugin")
    ap.add_argument("--bucket-batch", type=int, default=0, help="part 5: batch size (0: each plugin's composed one)")
    ap.add_argument("--cache-rounds", type=int, default=2, help="part 2: 2 = cached, on-the-fly, on-the-fly, cached")
    ap.add_argument("--cache-warmup", type=int, default=2, help="part 2: untimed steps per run")
    ap.add_argument("--cache-steps", type=int, default=14, help="part 2: timed steps per run")
    ap.add_argument("--child-timeout", type=float, default=400, help="seconds before a subprocess is abandoned")
    ap.add_argument("--prepare-rounds", type=int, default=2, help="part 3: rounds of (1 worker, all cores)")
    ap.add_argument("--prepare-songs", type=int, default=8, help="part 3: songs in the cache build")
    ap.add_argument("--prepare-workers", default="1", help=argparse.SUPPRESS)
    ap.add_argument("--malloc", choices=("default", "worker"), default="default", help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=("prepare", "cached", "onthefly", "build", "decode", "bucket"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--tag", default="", help=argparse.SUPPRESS)
    ap.add_argument("--case", default="cache", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.clock = "cpu" if args.threads == 1 else "wall"  # CPU time sums threads: only comparable with one
    if args.mode == "bucket":
        bucket_main(args)
        return 0
    if args.mode in ("build", "decode"):
        prepare_main(args)
        return 0
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
        plugin_caches = []
        for name, case in cases().items():
            if name != "cache" and args.only in (None, name):
                print(f"2. Feature cache (scaled {case.plugin}): prepare subprocess, then one subprocess per run...",
                      flush=True)
                (Path(tmp) / name).mkdir()
                plugin_caches.append(feature_cache(args, Path(tmp) / name, case))
        xcodec = None
        if args.only in (None, "xcodec-batch"):
            print("2b. SongGen's X-Codec (scaled): batch 8 against one at a time, interleaved rounds...", flush=True)
            xcodec = xcodec_batch(args)
        prep = None
        if args.only in (None, "prepare"):
            print("3. Data preparation (scaled ACE-Step): cache builds with 1 worker and with every core, each in a "
                  "fresh subprocess, then the decode stage against a bare loop...", flush=True)
            (Path(tmp) / "prepare").mkdir()
            prep = prepare_part(args, Path(tmp) / "prepare")
        pad = None
        if args.only in (None, "padding"):
            print("4. Padding waste of the batch sampler (VALL-E, SongGen, TorToiSe)...", flush=True)
            pad = padding(args)
        buckets = None
        if args.only in (None, "bucketing"):
            print("5. Training steps/s with duration buckets vs random order (scaled VALL-E, SongGen, TorToiSe), one "
                  "subprocess each...", flush=True)
            buckets = bucketing(args, Path(tmp) / "bucketing", lambda mode, case, work: _child(args, mode, case, work))
        report(args, over, cache, time.perf_counter() - start, load0, prep, pad, plugin_caches, xcodec, buckets)
    return 0


def prepare_part(args, work: Path) -> dict[str, Any]:
    """Part 3 on its own songs (``--prepare-songs``) with part 2's scaled presets and teachers."""
    import json

    from bench_cache import scaled_presets, write_teachers
    from bench_common import _write_songs

    _write_songs(work / "songs", count=args.prepare_songs, seconds=args.seconds)
    presets = scaled_presets(args.scale)
    (work / "presets.json").write_text(json.dumps(presets))
    (work / "overrides.json").write_text(json.dumps([] if args.no_repa else write_teachers(work / "teachers", presets)))

    def run_child(mode: str, tag: str, extra: list[str], env_extra: dict[str, str] | None = None) -> dict[str, Any]:
        return _child(args, mode, "cache", work, ["--tag", tag, *extra], env_extra)

    return data_preparation(args, work, run_child)


def _child(args, mode: str, case: str, work: Path, extra: list[str] = (),
           env_extra: dict[str, str] | None = None) -> dict[str, Any]:
    from bench_common import bench_child

    return bench_child(args, mode, work, ["--case", case, "--bucket-steps", str(args.bucket_steps),
                                          "--bucket-batch", str(args.bucket_batch), *extra], env_extra=env_extra)


if __name__ == "__main__":
    sys.exit(main())
