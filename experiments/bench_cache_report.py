"""Part 2's report: cached ÷ on-the-fly speed and peak memory of one case, with its targets and causes."""
from __future__ import annotations

import statistics
from typing import Any

from bench_common import _verdict


def cache_ratios(cache: dict[str, Any], clock: str) -> dict[str, Any]:
    """Speed and memory ratios cached ÷ on the fly (means of the runs); memory on the heap counter when loaded."""
    runs = cache["runs"]
    mean = lambda m, key: statistics.mean(r[key] for r in runs[m])  # noqa: E731
    sps = {m: statistics.mean(r["steps_per_s"][clock] for r in runs[m]) for m in runs}
    has_heap = all(r["heap_peak"] is not None for m in runs for r in runs[m])
    heap = {m: mean(m, "heap_peak") - mean(m, "heap_base") for m in runs} if has_heap else {}
    rss_net = {m: mean(m, "rss_peak") - mean(m, "rss_base") for m in runs}
    mem = heap or rss_net
    return {"sps": sps, "heap": heap, "rss": {m: mean(m, "rss_peak") for m in runs}, "rss_net": rss_net,
            "speed": sps["cached"] / max(sps["onthefly"], 1e-9), "mem": mem["cached"] / max(mem["onthefly"], 1e-9)}


def report_cache(con, args, over: list[dict[str, Any]], cache: dict[str, Any] | None, number: str = "2") -> None:
    from rich.table import Table

    if cache is None:
        return
    from bench_cache import cases

    case = cases()[cache.get("case", "cache")]
    clock, other = args.clock, ("wall" if args.clock == "cpu" else "cpu")
    unit = "steps per CPU-second" if clock == "cpu" else "steps/s (wall clock)"
    runs = cache["runs"]
    con.print(f"\n{number}. Feature cache - {case.header(args, cache)}, {args.cache_steps} steps after "
              f"{args.cache_warmup} warm-up; cache built in {cache['prepare']['prepare_s']:.1f} s by a separate "
              f"process; part run time {cache.get('seconds', 0):.0f} s.")
    r = cache_ratios(cache, clock)
    sps, heap, rss, rss_net = r["sps"], r["heap"], r["rss"], r["rss_net"]
    sps_other = cache_ratios(cache, other)["sps"]
    t = Table(title="cached vs on-the-fly (each run a fresh subprocess, ABBA order, mean of runs)")
    for col in ("", unit, "peak heap in use MB (net of imports)", "peak RSS MB", "peak RSS - imports MB",
                "frozen encoders built"):
        t.add_column(col, justify="right" if col else "left")
    for m, label in (("cached", "cached (FeatureCache)"), ("onthefly", "on the fly (cache=false)")):
        built = sorted({e for x in runs[m] for e in x["encoders_built"]})
        t.add_row(label, f"{sps[m]:.3f}", f"{heap[m]:.0f}" if heap else "n/a", f"{rss[m]:.0f}", f"{rss_net[m]:.0f}",
                  ", ".join(built) or "none")
    ratio = lambda d: d["cached"] / max(d["onthefly"], 1e-9)  # noqa: E731
    speed, mem = r["speed"], r["mem"]
    t.add_row("[bold]ratio cached / on the fly[/]", f"[bold]{speed:.2f}x[/]",
              f"[bold]{ratio(heap):.2f}x[/]" if heap else "n/a", f"{ratio(rss):.2f}x", f"{ratio(rss_net):.2f}x", "")
    t.add_row(f"(speed ratio on the {other} clock)", f"{sps_other['cached'] / sps_other['onthefly']:.2f}x",
              "", "", "", "")
    t.add_row("target", ">= 1.5x", "<= 0.6x" if heap else "", "(context)", "(context)" if heap else "<= 0.6x", "")
    con.print(t)
    measure = "peak heap in use, net of the imports" if heap else "peak RSS net of the imports (no C compiler)"
    con.print(f"  speed >= 1.5x: {_verdict(speed >= 1.5)} ({speed:.2f}x)   peak memory <= 0.6x: {_verdict(mem <= 0.6)} "
              f"({mem:.2f}x, {measure})")
    if any(x["encoders_built"] for x in runs["cached"]):
        con.print("  [bold red]the cached run built a frozen encoder: the cache was not used as intended[/]")
    if case.notes is not None:
        case.notes(con, args, cache, over)
    stages: dict[str, list[float]] = {}
    for x in runs["onthefly"]:
        for k, v in x.get("encoding_ms", {}).items():
            stages.setdefault(k, []).append(v[clock])
    if stages:
        step_ms = 1000 / sps["onthefly"]
        t = Table(title=f"on-the-fly encoding ({clock} ms, median per call; on-the-fly step = {step_ms:.0f} ms). "
                        f"'fixed' stages do not shrink with the model, so they weigh more here than at full size")
        t.add_column("stage")
        t.add_column("ms per call", justify="right")
        t.add_column("calls per step", justify="right")
        t.add_column("% of step", justify="right")
        calls = {k: statistics.mean(x.get("encoding_calls", {}).get(k, 1.0) for x in runs["onthefly"]) for k in stages}
        for k, v in stages.items():
            ms = statistics.mean(v)
            t.add_row(k, f"{ms:.1f}", f"{calls[k]:.1f}", f"{100 * ms * calls[k] / step_ms:.0f}%")
        con.print(t)
