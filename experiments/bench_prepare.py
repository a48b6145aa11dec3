"""Part 3 of the benchmark: data preparation over the machine's cores (see the docstring of ``experiments/bench.py``).

Cache build: the scaled ACE-Step of part 2 (its frozen encoders at the release's proportions: DC-AE, UMT5, the
REPA teachers), songs decoded and encoded into a fresh cache by ``load_data`` — once with
``dataset.prepare_workers=1`` and once with one worker per core, each in a fresh subprocess (ABBA order over the
rounds). Ratio = songs/s with all cores ÷ songs/s with one (target >= 1.7 on 2 cores).

Decode stage: audiotrain's decode of every file (``load_audio``: soundfile, mix-down, silence check, soxr
resample, clamp) ÷ a bare loop that does ``soundfile.read`` + ``soxr.resample`` to the same rate over the same
files, seven rounds interleaved after a warm-up, medians (target >= 0.8). Run twice — with the default malloc and with
its thresholds fixed — counting each loop's minor page faults: the measured cause of the difference. The whole check
of the folder without a cache (walk, content hashes, decode in a worker, report) is printed beside it.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from bench_common import RESULT_TAG, _base_overrides, _register_configs, _setup_torch, _verdict


def prepare_main(args) -> None:
    """``--mode build`` (the cache, ``--prepare-workers N``) or ``--mode decode`` (no cache, then the bare loop)."""
    _setup_torch(args.threads)
    work = Path(args.work)
    from audiotrain.config.compose import _compose
    from audiotrain.plugins import registry
    from audiotrain.train.console import console
    from audiotrain.train.data_setup import load_data
    from bench_cache import _install_presets

    console.quiet = True
    _register_configs()
    _install_presets(json.loads((work / "presets.json").read_text()))
    base = _base_overrides(work / "songs", work, 1, repeat=1) + json.loads((work / "overrides.json").read_text())
    base += [f"cache_dir={work / f'cache_{args.mode}{args.tag}'}", f"dataset.prepare_workers={args.prepare_workers}"]
    result: dict[str, Any] = {"mode": args.mode, "workers": args.prepare_workers}
    if args.mode == "build":
        cfg = _compose(base + ["cache=true"])
        t = time.perf_counter()  # the frozen encoders' build counts (done once, before the workers start)
        items = load_data(cfg, registry.get("acestep"), work / "runs" / f"build{args.tag}", "cpu",
                          save_report=False).train
        result.update(items=len(items), seconds=time.perf_counter() - t)
    else:
        if args.malloc == "worker":  # as a preparation worker runs (audiotrain.data.prepare_pool sets it)
            from audiotrain.data.allocator import reuse_freed_memory

            assert reuse_freed_memory(), "no glibc mallopt here: --malloc worker measures nothing different"
        cfg = _compose(base + ["cache=false"])
        t = time.perf_counter()
        data = load_data(cfg, registry.get("acestep"), work / "runs" / f"decode{args.tag}", "cpu", save_report=False)
        check_s = time.perf_counter() - t  # the whole check without a cache: walk, hash, decode, report
        import statistics

        import soundfile as sf
        import soxr

        from audiotrain.data.audio_io import load_audio

        spec = registry.get("acestep").audio_streams(cfg)["main"]
        paths = [item.audio_path for item in data.train.items]

        import resource

        faults = {"ours": 0, "bare": 0}  # minor page faults: memory the kernel hands over (zeroed) while decoding

        def timed(side: str, one) -> float:
            f, t = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
            for path in paths:
                one(path)
            t = time.perf_counter() - t
            faults[side] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f
            return t

        def bare_one(path: str) -> None:
            audio, sr = sf.read(path, dtype="float32", always_2d=True)
            soxr.resample(audio, sr, spec.sample_rate)

        a, b = [], []
        timed("ours", lambda p: load_audio(p, spec)), timed("bare", bare_one)  # warm-up: page cache, first calls
        faults.update(ours=0, bare=0)
        for i in range(7):  # interleaved, ABBA, so the machine's drift hits both alike
            for side in (("bare", "ours") if i % 2 else ("ours", "bare")):
                (a if side == "ours" else b).append(timed(side, (lambda p: load_audio(p, spec)) if side == "ours"
                                                          else bare_one))
        result.update(items=len(paths), seconds=statistics.median(a), bare_seconds=statistics.median(b),
                      check_seconds=check_s, faults={k: v / (7 * len(paths)) for k, v in faults.items()})
    print(RESULT_TAG + json.dumps(result), flush=True)




def data_preparation(args, work: Path, run_child) -> dict[str, Any]:
    """Rounds of build(1 worker) / build(all cores), then the decode comparison; ``work`` holds part 2's
    songs, presets and teachers."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    runs: dict[int, list[dict[str, Any]]] = {1: [], cores: []}
    for i in range(args.prepare_rounds):
        order = (1, cores) if i % 2 == 0 else (cores, 1)
        for n in order:
            r = run_child("build", f"{n}w{i}", ["--prepare-workers", str(n)])
            runs[n].append(r)
            print(f"  round {i + 1}/{args.prepare_rounds} cache build, {n} worker(s): {r['items'] / r['seconds']:.2f} "
                  f"songs/s ({r['seconds']:.1f} s for {r['items']})", flush=True)
    # as the preparation's workers decode (glibc malloc's thresholds fixed by audiotrain.data.allocator: both loops
    # then reuse warm pages), and with glibc's defaults, where audiotrain's larger per-file arrays fault more
    fixed = run_child("decode", "f", ["--prepare-workers", "1", "--malloc", "worker"])
    decode = run_child("decode", "d", ["--prepare-workers", "1"])
    for d, how in ((fixed, "as the workers run: malloc thresholds fixed"), (decode, "glibc's default malloc")):
        print(f"  decode ({how}): audiotrain {d['seconds']:.3f} s, bare soundfile + soxr loop "
              f"{d['bare_seconds']:.3f} s, page faults per file {d['faults']['ours']:.0f} / {d['faults']['bare']:.0f} "
              f"(the whole check without a cache: {d['check_seconds']:.2f} s)", flush=True)
    return {"cores": cores, "runs": runs, "decode": decode, "decode_fixed": fixed}


def report_preparation(con, args, prep: dict[str, Any] | None) -> None:
    if prep is None:
        return
    import statistics

    cores = prep["cores"]
    rate = {n: statistics.median(r["items"] / r["seconds"] for r in rs) for n, rs in prep["runs"].items()}
    ratio = rate[cores] / rate[1]
    d, f = prep["decode"], prep["decode_fixed"]
    dec, dec_fixed = d["bare_seconds"] / d["seconds"], f["bare_seconds"] / f["seconds"]
    con.print(f"\n3. Data preparation ({prep['runs'][1][0]['items']} songs of {args.seconds:g} s, the scaled ACE-Step "
              f"of part 2; median of {args.prepare_rounds} rounds)")
    con.print(f"   cache build, {cores} workers ÷ 1 worker: {rate[cores]:.2f} / {rate[1]:.2f} songs/s = "
              f"[bold]{ratio:.2f}[/] (target >= 1.7 on 2 cores: {_verdict(ratio >= 1.7)})")
    con.print(f"   decode stage as the preparation's workers run it (load_audio: decode, mix-down, silence check, "
              f"resample, clamp; glibc malloc's thresholds fixed by audiotrain.data.allocator) ÷ bare soundfile + soxr "
              f"loop in the same process, {f['items']} files, median of 7 interleaved: {f['bare_seconds']:.3f} s / "
              f"{f['seconds']:.3f} s = [bold]{dec_fixed:.2f}[/] (target >= 0.8: {_verdict(dec_fixed >= 0.8)})")
    con.print(f"   the same with glibc's default malloc (a preparation in the training process, "
              f"dataset.prepare_workers=0): {d['bare_seconds']:.3f} s / {d['seconds']:.3f} s = {dec:.2f}; minor page "
              f"faults per file {d['faults']['ours']:.0f} (audiotrain) vs {d['faults']['bare']:.0f} (bare loop), "
              f"{f['faults']['ours']:.0f} vs {f['faults']['bare']:.0f} with the thresholds fixed: by default glibc "
              f"serves audiotrain's larger per-file arrays (the channels-first copy its (channels, samples) tensors "
              f"need) with fresh pages from the kernel, zeroed, file after file, where it reuses the bare loop's. The "
              f"rest is work the bare loop does not do: that copy, the NaN and silence checks, the clamp.")
