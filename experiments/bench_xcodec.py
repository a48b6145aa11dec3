"""SongGen's batched X-Codec encoding ÷ one clip at a time (``--only xcodec-batch``; target >= 3x at batch 8).

X-Codec (transformers' ``XcodecModel``, the hubert_general layout SongGen encodes with) with every width of the
release divided by ``--xcodec-scale`` (default 4: 160.7 M -> about 10 M parameters, so the part takes a minute
or two on 2 cores; depths, the 16 kHz rate, hop 320 and 8 x 1024 codebooks kept), random seeded weights.
``--xcodec-clips`` clips (default 8) of ``--xcodec-seconds`` of seeded noise, all of one length (SongGen's
cache build cuts clips to a fixed duration, and ``codec.encode_batch`` stacks only equal lengths: padding
would change the codes). Throughput = clips per second of ``encode_batch(max_batch=8)`` and of
``encode_batch(max_batch=1)`` (the original's batch 1), rounds interleaved after a warm-up, medians; the codes
of both are checked to be identical. Run in this process with the bench's torch threads.
"""
from __future__ import annotations

import statistics
import time
from typing import Any

from bench_common import SEED, _now, _verdict

#: seconds of the second, short-clip measurement (where per-call overhead, not compute, dominates)
SHORT = 0.5


def xcodec_batch(args) -> dict[str, Any]:
    import torch
    from transformers import XcodecConfig, XcodecModel

    import bench_scaled
    from audiotrain_songgen import codec

    t0 = time.perf_counter()
    u = max(1, 64 // int(args.xcodec_scale))  # bench_scaled._xcodec's unit: 64 is the release
    acoustic, semantic, top = bench_scaled._xcodec(u)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = XcodecModel(XcodecConfig(acoustic_model_config=acoustic, semantic_model_config=semantic, **top)).eval()
    model.requires_grad_(False)
    params = bench_scaled.count(model)
    lengths = {"clips": args.xcodec_seconds, "short clips": SHORT}
    out = {"params": params, "release": bench_scaled.RELEASE["songgen"]["xcodec"], "seconds_of": lengths,
           **{name: _throughput(model, codec, seconds, args) for name, seconds in lengths.items()},
           "seconds": time.perf_counter() - t0}
    r = out["clips"]["rate"]
    print(f"  X-Codec ({params / 1e6:.2f} M): batch 8 {r[8][args.clock]:.2f} clips/s, one at a time "
          f"{r[1][args.clock]:.2f} clips/s ({args.clock} clock)", flush=True)
    return out


def _throughput(model: Any, codec: Any, seconds: float, args) -> dict[str, Any]:
    """Clips/s of encode_batch at max_batch 8 and 1 on ``--xcodec-clips`` equal-length clips; codes compared."""
    import torch

    g = torch.Generator().manual_seed(SEED)
    waves = [0.1 * torch.randn(int(seconds * codec.SAMPLE_RATE), generator=g) for _ in range(args.xcodec_clips)]

    def run(max_batch: int) -> tuple[float, float, list[torch.Tensor]]:
        t = _now()
        codes = codec.encode_batch(model, waves, max_batch=max_batch)
        t2 = _now()
        return t2[0] - t[0], t2[1] - t[1], codes

    run(8), run(1)  # warm-up
    times: dict[int, list[tuple[float, float]]] = {8: [], 1: []}
    same = True
    for i in range(args.xcodec_rounds):
        results = {}
        for b in ((8, 1) if i % 2 == 0 else (1, 8)):
            wall, cpu, codes = run(b)
            times[b].append((wall, cpu))
            results[b] = codes
        same = same and all(torch.equal(a, c) for a, c in zip(results[8], results[1]))
    rate = {b: {"wall": args.xcodec_clips / statistics.median(w for w, _ in ts),
                "cpu": args.xcodec_clips / statistics.median(c for _, c in ts)} for b, ts in times.items()}
    return {"rate": rate, "same": same}


def report_xcodec(con, args, r: dict[str, Any] | None) -> None:
    if r is None:
        return
    clock, other = args.clock, ("wall" if args.clock == "cpu" else "cpu")
    rate = r["clips"]["rate"]
    ratio = rate[8][clock] / rate[1][clock]
    con.print(f"\n2b. SongGen's X-Codec encoding, batch 8 ÷ one at a time (X-Codec widths / {args.xcodec_scale}: "
              f"{r['params'] / 1e6:.2f} M of the release's {r['release'] / 1e6:.1f} M; {args.xcodec_clips} clips of "
              f"{args.xcodec_seconds:g} s at 16 kHz; median of {args.xcodec_rounds} interleaved rounds; part run time "
              f"{r['seconds']:.0f} s)")
    con.print(f"   {rate[8][clock]:.2f} / {rate[1][clock]:.2f} clips/s = [bold]{ratio:.2f}x[/] "
              f"(target >= 3x: {_verdict(ratio >= 3)}; {other} clock {rate[8][other] / rate[1][other]:.2f}x); "
              f"codes identical to one at a time: {'yes' if r['clips']['same'] and r['short clips']['same'] else '[bold red]no[/]'}")
    if ratio < 3:
        per = {b: 1000 / rate[b][clock] for b in (8, 1)}
        short = r["short clips"]["rate"]
        con.print(f"   cause: on this CPU a clip costs {per[1]:.0f} ms alone and {per[8]:.0f} ms inside a batch of 8: "
                  f"one clip's convolutions already keep the {args.threads} torch thread(s) busy, so stacking clips "
                  f"adds no parallelism, only larger activations. Where the per-call overhead dominates - "
                  f"{SHORT:g} s clips - batch 8 gives {short[8][clock] / short[1][clock]:.2f}x. (On a GPU, where one "
                  f"clip leaves most of the device idle, batching can pay more: not measured here.)")
