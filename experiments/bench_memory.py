"""``make bench-memory``: the peak memory of one training step of each plugin's released model, measured.

What is measured. For each plugin's released preset (ACE-Step ``v1-3.5b``, VALL-E ``full``, SongGen ``mixed_pro``,
TorToiSe ``release``), built with seeded random weights on the CPU, one training step - forward, backward,
gradient clipping and the optimizer step - of one batch of random features with the shapes the plugin's collate
produces at one representative clip length. The value is the high-water mark of the heap bytes in use during
build + step (``experiments/heap_peak.c`` preloaded into a fresh subprocess per measurement, as ``make bench``
does: the CPU counterpart of a GPU's peak allocated memory), above the heap in use after every library is
imported. Beside it the exact bytes of the weights, the gradients and the optimizer state (summed from the
tensors), so the 8-bit optimizer's ratio is that of the state itself, not of whole-process peaks.

The code path is the framework's: the config is composed as ``audiotrain`` composes it (the plugin's model
group, ``precision=bf16-mixed``, ``lora=...``, ``optimizer=...``, ``trainer.gradient_checkpointing=...``), the
model comes from ``audiotrain.train.model_setup.build_model`` (the plugin's ``build_backbone``, unused weights
released, PEFT LoRA attached, gradient checkpointing enabled, the training plan applied), the optimizer from
``build_optimizer(torch_param_groups(...), full_state=embedding_weights(...))`` as ``TrainModule`` builds it,
the batch from the plugin's ``collate`` and the loss from ``backbone.training_losses`` under
``torch.autocast("cpu", bfloat16)`` (what Lightning's ``bf16-mixed`` does on a CPU), then ``clip_grad_norm_`` and
``step``. The weights stay fp32, except that a LoRA run's frozen linear/conv weights are held in bf16 by
``model.frozen_dtype=auto`` (audiotrain/lora/frozen_dtype.py: autocast computes them in bf16 anyway).

Rows: see ``bench_memory_rows.py`` (LoRA with and without gradient checkpointing, full fine-tunes with fp32 and
8-bit AdamW, the frozen base in fp32, QLoRA, the original trainers' set-ups; ACE-Step 1.5's 2B and XL LoRA).

Where the parts live: the rows and systems ``bench_memory_rows.py``, the random cached batches
``bench_memory_features.py``, the original trainers' per-step encoders ``bench_memory_original.py``, one
measurement (the child process) ``bench_memory_child.py`` and, for ACE-Step 1.5, ``bench_memory_acestep15.py``,
the extrapolation ``bench_memory_summary.py``, the table ``bench_memory_report.py`` and the comparison with
what people report ``bench_memory_compare.py``.

Depths and extrapolation. 24 GiB cannot hold e.g. ACE-Step's full fine-tune with fp32 AdamW (~56 GB), so each
model is built with ALL its release widths but only a few of its repeated blocks (the transformer stack: ACE-Step
``num_layers`` of 24, VALL-E ``layers`` of 12, SongGen decoder ``num_hidden_layers`` of 24, TorToiSe GPT-2
``layers`` of 30; everything else - embeddings, lyric encoders, heads, the T5 of SongGen - at release size),
measured at two depths d1 < d2 and extrapolated linearly per block to the release depth L:
``peak(L) = peak(d1) + (L - d1) * (peak(d2) - peak(d1)) / (d2 - d1)`` (the byte counts likewise; they are exactly
linear). VALL-E and TorToiSe fit whole, and SongGen's LoRA and full fine-tune rows: they are also measured at full
depth (the table then gives the measurement), and the extrapolation's error against it is reported.
Default depths 2 and 4 (``--depths 2,4``): the first block costs a little more than the others (VALL-E LoRA: +0.096 GB from 1 to 2 blocks, then 0.073-0.080 GB a block up to 12),
so 1 and 2 overestimate by ~14% at 12 blocks. With 2 and 4, the extrapolations checked against whole-model
measurements were off by -9.6% (VALL-E full fine-tune, fp32 AdamW) to +4.3% (TorToiSe LoRA), most within 4%;
ACE-Step, which does not fit whole, is extrapolated only. Every phase's peak (building, the
original set-up's per-step encoding, the step) is extrapolated on its own.

Clip lengths (batch 1 everywhere: one clip's memory; the configured batch sizes - VALL-E 16, SongGen 4,
TorToiSe 32 - multiply the activation part, not the weights and optimizer state):

* ACE-Step 60 s  - a typical training song excerpt (646 latent frames at 10.77 Hz; trainer.py trains whole songs,
  60 s is what its users' LoRA recipes crop to and what fits one consumer GPU);
* VALL-E 10 s    - a typical utterance (750 EnCodec frames x 8 levels, 150 phonemes, a 4.5 s same-speaker prompt);
* SongGen 30 s   - its maximum (max_duration 30 s: 1500 X-Codec frames x 8 codebooks, 3 s voice prompt);
* TorToiSe 11.6 s - DLAS pads every clip to 255,995 samples (250 DVAE codes, 2 conditioning crops of 172 frames);
* ACE-Step 1.5 60 s - 1,500 latent frames at 25 Hz, a typical training excerpt (what crop-based LoRA recipes cut
  songs to), and 240 s (6,000 frames, the ``lora_240s`` row): the longest song it takes, where the activations are
  largest.

The table's main value is the step's peak (its phases - the original set-ups' per-step encoding, the step itself -
each extrapolated on its own, the larger taken); the peak while building the model is a column of its own.

Targets: LoRA r=16 peak <= 0.5 x the full fine-tune's (fp32 AdamW); AdamW8bit optimizer state <= 0.3 x fp32 AdamW's;
ACE-Step's LoRA step <= 0.5 x the original trainer's set-up. A benchmark never fails the build (exit 0 on missed
targets). The table is printed and written to ``docs/memory.md``.

ACE-Step 1.5 (``--only acestep15`` the 2B ``base``, ``--only acestep15_xl`` the 4B ``xl-base``) is built from its
package's modules one decoder layer at a time (``bench_memory_acestep15.py``: LoRA r=64 alpha=128 on the decoder's
attention, the frozen base in bf16, cached conditions), measured at the two depths and whole (the 2B's 60 s rows, the
XL's ``lora`` row; ``--no-full`` skips that: the XL whole needs ~10 GB), and compared with the 7-17 GB its users' trainers
report.

Usage: ``python experiments/bench_memory.py [--only PLUGIN] [--depths 1,2] [--rows lora,full_adamw] [--no-full]
[--json FILE] [--reuse FILE]`` (``--reuse``: take the measurements of the rows not asked for from an earlier
``--json`` file, so a change to some rows re-measures only those).
"""
from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import RESULT_TAG, _loadavg, build_heap_peak  # noqa: E402
from bench_memory_child import child_main  # noqa: E402
from bench_memory_report import _fmt, report  # noqa: E402
from bench_memory_rows import FULL_CHECK, PLUGINS, RELEASE_DEPTH, ROWS, has_row, heavy  # noqa: E402
from bench_memory_summary import step_peak, summarise  # noqa: E402

# the builders tests/gpu/test_gpu_bench.py and bench_bucketing.py take from here
from bench_common import SEED  # noqa: E402,F401
from bench_memory_features import _items  # noqa: E402,F401
from bench_memory_original import _acestep_original  # noqa: E402,F401
from bench_memory_rows import CLIP, PRESET, _overrides, _set_depth  # noqa: E402,F401

GB = 1e9


def _run_child(spec: dict[str, Any], shim: str, timeout: float) -> dict[str, Any]:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONWARNINGS": "ignore"}
    if shim:
        env["LD_PRELOAD"] = shim
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            r = json.loads(line[len(RESULT_TAG):])
            r["wall_s"] = time.perf_counter() - t
            return r
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-12:])
    return {**spec, "error": f"exit {proc.returncode}: {tail}"}



def _parse_args(argv: list[str] | None = None):
    p = argparse.ArgumentParser(description="Peak memory of one training step of each plugin's released model.")
    p.add_argument("--only", action="append", default=None, help=f"system(s) to measure (default: all of {', '.join(PLUGINS)})")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated rows (default: {','.join(ROWS)})")
    p.add_argument("--depths", default="2,4", help="the two block depths measured and extrapolated from")
    p.add_argument("--no-full", action="store_true", help="skip the full-depth measurements (VALL-E, TorToiSe, SongGen, ACE-Step 1.5)")
    p.add_argument("--jobs", type=int, default=2, help="measurements run at once (each its own process)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per measurement")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds one measurement may take")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "docs" / "memory.md"))
    p.add_argument("--json", default=None, help="also write every measurement (JSON) to this file")
    p.add_argument("--from-json", default=None, help="re-render the table from a --json file (no measuring)")
    p.add_argument("--reuse", default=None, help="take the measurements of the rows not asked for (--rows/--only) "
                                                 "from this earlier --json file")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    return p, args


def main(argv: list[str] | None = None) -> int:
    p, args = _parse_args(argv)
    if args.child:
        child_main(json.loads(args.child))
        return 0
    only = [x.strip() for o in (args.only or []) for x in o.split(",") if x.strip()] or list(PLUGINS)
    bad = [x for x in only if x not in PLUGINS]
    if bad:
        p.exit(2, f"bench_memory: --only {','.join(bad)} is not a plugin here: use one of {', '.join(PLUGINS)}.\n")
    rows = [x.strip() for x in args.rows.split(",") if x.strip()]
    if any(r not in ROWS for r in rows):
        p.exit(2, f"bench_memory: --rows takes {', '.join(ROWS)} (got {args.rows}).\n")
    try:
        depths = tuple(int(x) for x in args.depths.split(","))
        assert len(depths) == 2 and 0 < depths[0] < depths[1]
    except (ValueError, AssertionError):
        p.exit(2, f"bench_memory: --depths takes two increasing block counts like 2,4 (got {args.depths}).\n")
    args.depths = depths
    from rich.console import Console

    con = Console(width=None if sys.stdout.isatty() else 160)
    load0, t0 = _loadavg(), time.perf_counter()
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        results, elapsed, load0, load1 = saved["results"], saved["elapsed_s"], saved["load_before"], saved["load_after"]
        return _finish(args, results, depths, elapsed, load0, load1, saved.get("note", ""))
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        shim = build_heap_peak(Path(tmp))
        if shim is None:
            con.print("[yellow]no C compiler: peak heap cannot be measured (RSS only)[/]")
        specs = []
        for plugin in only:
            for row in rows:
                if not has_row(plugin, row):
                    continue
                full = not args.no_full and row in FULL_CHECK.get(plugin, ()) and RELEASE_DEPTH[plugin] > depths[1]
                ds = list(depths) + ([RELEASE_DEPTH[plugin]] if full else [])
                specs += [{"plugin": plugin, "row": row, "depth": d, "threads": args.threads} for d in ds]
        # the heavy ones (one at a time: the critical path) first, then the largest
        specs.sort(key=lambda s: (not heavy(s), -s["depth"] * (2 if s["row"].startswith("full") else 1)))
        con.print(f"{len(specs)} measurements, {args.jobs} at a time ({os.cpu_count()} cores, load {load0})")
        results: list[dict[str, Any]] = []

        def one(spec):
            r = _run_child(spec, str(shim) if shim else "", args.timeout)
            tag = f"{spec['plugin']:12s} {spec['row']:11s} depth {spec['depth']:2d}"
            if "error" in r:
                con.print(f"  {tag}: [red]failed[/] {r['error'].splitlines()[-1] if r['error'] else ''}")
            else:
                con.print(f"  {tag}: step peak {_fmt(step_peak(r))} GB, load peak {_fmt(r['heap_build_gb'])} GB (weights {r['param_bytes'] / GB:.2f}, state "
                          f"{r['state_bytes'] / GB:.3f}); build {r['build_s']:.0f} s, step {r['step_s']:.0f} s", highlight=False)
            return r

        pending, cond, busy = list(specs), threading.Condition(), [False]

        def worker() -> None:  # takes the next measurement, but never a second heavy one beside a heavy one
            while True:
                with cond:
                    while True:
                        if not pending:
                            return
                        pick = next((s for s in pending if not (heavy(s) and busy[0])), None)
                        if pick is not None:
                            break
                        cond.wait()
                    pending.remove(pick)
                    if heavy(pick):
                        busy[0] = True
                r = one(pick)
                with cond:
                    results.append(r)
                    if heavy(pick):
                        busy[0] = False
                    cond.notify_all()

        threads = [threading.Thread(target=worker) for _ in range(max(1, args.jobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    elapsed, load1 = time.perf_counter() - t0, _loadavg()
    note = ""
    if args.reuse:
        measured = {(r["plugin"], r["row"]) for r in results}
        kept = [r for r in json.loads(Path(args.reuse).read_text())["results"] if (r["plugin"], r["row"]) not in measured]
        results += kept
        note = (f"Re-measured here: {', '.join(sorted({f'{p}/{r}' for p, r in measured}))}; the other rows "
                f"({len(kept)} measurements) are from {Path(args.reuse).name}.")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "elapsed_s": elapsed, "load_before": load0,
                                               "load_after": load1, "note": note}, indent=1))
    return _finish(args, results, depths, elapsed, load0, load1, note)


def _finish(args, results, depths, elapsed: float, load0: str, load1: str, note: str = "") -> int:
    summary = summarise(results, depths)
    md = report(summary, args, elapsed, load0, load1, note)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    print("\n" + md, flush=True)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())