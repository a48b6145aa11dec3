"""``make bench-memory``'s measurements summarised per system and row: the release-depth values, extrapolated
linearly per block from the two measured depths or measured whole, with the extrapolation's error."""
from __future__ import annotations

from typing import Any

from bench_memory_rows import PLUGINS, RELEASE_DEPTH, ROWS


def _extrapolate(a: dict[str, Any], b: dict[str, Any], depth: int, key: str) -> float:
    d1, d2 = int(a["depth"]), int(b["depth"])
    return a[key] + (depth - d1) * (b[key] - a[key]) / (d2 - d1)


PHASES = ("build", "encode", "step")
STEP_PHASES = ("encode", "step")  # one training step: the original set-ups' per-step encoding, then the step
KEYS = ("heap_build_gb", "heap_encode_gb", "heap_step_gb", "rss_peak_gb", "param_bytes", "trainable_bytes", "grad_bytes", "state_bytes", "params",
        "trainable")


def step_peak(r: dict[str, Any]) -> float:
    """The peak of one training step (its per-step encoding included), above the heap after imports."""
    return max(r[f"heap_{k}_gb"] for k in STEP_PHASES)


def summarise(results: list[dict[str, Any]], depths: tuple[int, int]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per plugin and row: the release-depth values (extrapolated from the two depths, or measured), with where
    each came from, and the extrapolation error where a full-depth measurement exists."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    by = {(r["plugin"], r["row"], int(r["depth"])): r for r in results}
    for plugin in PLUGINS:
        for row in ROWS:
            L = RELEASE_DEPTH[plugin]
            a, b, full = by.get((plugin, row, depths[0])), by.get((plugin, row, depths[1])), by.get((plugin, row, L))
            errs = [r["error"] for r in (a, b, full) if r and "error" in r]
            if not (a or b or full):
                continue
            entry: dict[str, Any] = {"errors": errs}
            ok = lambda r: r is not None and "error" not in r  # noqa: E731
            # ACE-Step 1.5: the parameters a cached step never reads, left unbuilt (the same at every depth)
            entry["released"] = next((r.get("released") for r in (full, a, b) if ok(r)), None)
            if ok(a) and ok(b) and a["heap_peak_gb"] is not None and b["heap_peak_gb"] is not None:
                entry["extrap"] = {k: _extrapolate(a, b, L, k) for k in KEYS}
                # the step's peak is the larger of its phases', each phase extrapolated on its own
                entry["extrap"]["step_peak_gb"] = max(entry["extrap"][f"heap_{k}_gb"] for k in STEP_PHASES)
                entry["extrap"]["phase"] = max(STEP_PHASES, key=lambda k: entry["extrap"][f"heap_{k}_gb"])
                entry["depth_values"] = {str(r["depth"]): step_peak(r) for r in (a, b)}
                entry["encoders"] = a.get("encoders") or {}
                entry["step_s"] = [a["step_s"], b["step_s"]]
            if ok(full):
                entry["measured"] = {**{k: full[k] for k in KEYS}, "step_peak_gb": step_peak(full),
                                     "phase": max(STEP_PHASES, key=lambda k: full[f"heap_{k}_gb"])}
                entry["encoders"] = full.get("encoders") or entry.get("encoders", {})
                entry["step_s_full"] = full["step_s"]
            if "measured" in entry:
                entry["value"], entry["source"] = entry["measured"], f"measured at depth {L}"
                if "extrap" in entry:
                    m, e = entry["measured"]["step_peak_gb"], entry["extrap"]["step_peak_gb"]
                    entry["extrap_error"] = (e - m) / m
            elif "extrap" in entry:
                entry["value"], entry["source"] = entry["extrap"], f"extrapolated from depths {depths[0]},{depths[1]}"
            out.setdefault(plugin, {})[row] = entry
    return out

