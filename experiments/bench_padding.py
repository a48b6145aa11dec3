"""Part 4 of the benchmark: the padding the batch sampler makes the token models compute.

For VALL-E, SongGen and TorToiSe: a seeded corpus of 2,000 clips with the plugin's kind of length mix (speech:
log-normal around 5 s within the plugin's bounds; songs: uniform over SongGen's 2-30 s), batched by
``BucketBatchSampler`` with the plugin's composed batch size, once with duration buckets (``dataset.order=duration``)
and once in random order. Waste = positions computed ÷ real positions (``audiotrain.data.batching.padding_waste``),
the mean over 5 epochs. Target: <= 1.10 bucketed.
"""
from __future__ import annotations

from typing import Any

from bench_common import _register_configs, _verdict

CLIPS = 2000
#: (plugin, length mix, low, high) — the plugin's clip bounds
CORPORA = (("valle", "speech", 1.0, 20.0), ("songgen", "songs", 2.0, 30.0), ("tortoise", "speech", 0.6, 11.6))


def corpus(kind: str, low: float, high: float, seed: int = 0) -> list[float]:
    import torch

    g = torch.Generator().manual_seed(seed)
    if kind == "songs":
        d = low + (high - low) * torch.rand(CLIPS, generator=g)
    else:
        d = torch.exp(torch.log(torch.tensor(5.0)) + 0.5 * torch.randn(CLIPS, generator=g))
    return d.clamp(low, high).tolist()


def padding(args) -> list[dict[str, Any]]:
    from audiotrain.config.compose import _compose
    from audiotrain.data.batching import BucketBatchSampler, padding_waste

    _register_configs()
    out = []
    for plugin, kind, low, high in CORPORA:
        cfg = _compose([f"model={plugin}", "data=unused"])
        batch = max(2, int(cfg.dataset.batch_size))
        durations = corpus(kind, low, high)
        groups = [f"g{i % 20}" for i in range(CLIPS)]
        default = str(cfg.dataset.get("order") or "random")  # null: shuffled examples, as random order pads
        row: dict[str, Any] = {"plugin": plugin, "batch": batch, "kind": kind, "default": default,
                               "compat": bool(cfg.model.get("tortoise_compat", False))}
        for order in sorted({"duration", "random", default}):
            s = BucketBatchSampler(durations, groups, order=order, batch_size=batch, seed=1)
            row[order] = sum(padding_waste(s.epoch_batches(e), durations) for e in range(5)) / 5
        out.append(row)
        print(f"  {plugin}: batch {batch}, bucketed {row['duration']:.3f}, random {row['random']:.3f}, default "
              f"({default}) {row[default]:.3f}", flush=True)
    return out


def report_padding(con, rows: list[dict[str, Any]] | None) -> None:
    if not rows:
        return
    con.print(f"\n4. Padding waste of the batch sampler (positions computed ÷ real; {CLIPS} clips, mean of 5 epochs)")
    for r in rows:
        con.print(f"   {r['plugin']:9s} batch {r['batch']:3d} ({r['kind']}): duration buckets [bold]{r['duration']:.3f}[/]"
                  f" ({_verdict(r['duration'] <= 1.10)} <= 1.10), random order {r['random']:.3f}, the plugin's "
                  f"default order ({r['default']}) {r[r['default']]:.3f}")
    con.print("   dataset.order=duration is the setting to train faster; the defaults keep each original's order. "
              "TorToiSe with model.tortoise_compat=true (AIVC's) pads every clip's codes to 11.6 s as DLAS does, "
              "whatever the order: the sampler's order only matters with tortoise_compat=false.")
