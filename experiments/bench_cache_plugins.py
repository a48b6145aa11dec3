"""Part 2 for the token models: the feature cache of VALL-E, SongGen and TorToiSe (``--only cache-valle`` ...).

The same machinery as ACE-Step's (``bench_cache.feature_cache``: a prepare subprocess, then cached and on-the-fly
``run.train`` subprocesses in ABBA order, the heap counter preloaded), on each plugin's released architecture at
scaled proportions (``bench_scaled``: widths / ``--scale``, each frozen encoder fitted to its release share of
the trainable model's parameters). Data: the plugin's own example data (espeak-ng speech for VALL-E and
TorToiSe, synthetic songs with stems for SongGen), ``--plugin-clips`` clips, batch ``--plugin-batch`` (the
released batch sizes, 16 / 4 / 32, multiply the encoders' and the model's work alike), LoRA r=16 on the plugin's
default targets, every other setting the plugin's default (TorToiSe: tortoise_compat, clips padded to 11.6 s).
What the cache replaces, per plugin: ``bench_scaled.FROZEN_NOTE``.
"""
from __future__ import annotations

import functools
import importlib
import json
from pathlib import Path
from typing import Any

import bench_scaled
from bench_common import _base_overrides

#: the LazyEncoders each plugin's cache replaces (the names its encoders register)
FROZEN = {"valle": {"codes", "phonemes"}, "songgen": {"codes_mix", "codes_vocal", "codes_acc", "text", "voice"},
          "tortoise": {"speech"}}
#: how the on-the-fly stage table names each encoder ("fixed": a cost that does not shrink with the model)
STAGES = {"codes": "EnCodec encoder (scaled)", "phonemes": "espeak-ng phonemes + ids (fixed)",
          "codes_mix": "X-Codec, mix (scaled)", "codes_vocal": "X-Codec, vocal stem (scaled)",
          "codes_acc": "X-Codec, accompaniment (scaled)", "text": "flan-t5 description (scaled)",
          "lyrics": "lyrics tokenizer (fixed)", "voice": "MERT over 2 vocal crops (scaled)",
          "speech": "mel + DVAE codes of the padded clip (DVAE scaled, mel fixed)"}
#: the transformers models each plugin's encoders are, imported before the baseline
MODELS = {"valle": ("encodec",), "songgen": ("xcodec", "t5", "hubert"), "tortoise": ()}


def _setup(plugin: str, args, work: Path) -> dict[str, Any]:
    from audiotrain.plugins import registry

    data = work / "data"
    if plugin == "songgen":  # songs of the bench's length (the example's are 4 s)
        from audiotrain_songgen.example_data import write_song_folder

        write_song_folder(data, args.plugin_clips, seconds=args.seconds)
    else:
        registry.get(plugin).example_data(data, count=args.plugin_clips)
    presets = bench_scaled.presets(plugin, args.scale)
    (work / "presets.json").write_text(json.dumps(presets))
    (work / "overrides.json").write_text("[]")
    return presets


def _overrides(plugin: str, args, work: Path, steps: int) -> list[str]:
    extra = [f"dataset.batch_size={args.plugin_batch}", "trainer.accumulate_grad_batches=1"]
    if plugin == "tortoise":  # AIVC counts epochs and saves / validates by them: steps here, no saves in between
        extra += ["trainer.max_epochs=-1", "model.save_every_epochs=null", "model.validate_every_epochs=null",
                  "trainer.val_check_interval=null", "dataset.drop_last=false"]
    return _base_overrides(work / "data", work, steps, repeat=1, plugin=plugin) + extra


def _preload(plugin: str) -> None:
    for module in ("encoders", "features", "backbone", "collate"):
        try:
            importlib.import_module(f"audiotrain_{plugin}.{module}")
        except ModuleNotFoundError:
            pass
    for name in MODELS[plugin]:
        importlib.import_module(f"transformers.models.{name}.modeling_{name}")


def _stages(plugin: str) -> dict[str, list[tuple[float, float, float]]]:
    """Per-call (wall, CPU) time of the decode and of each frozen encoder, by the encoder's name."""
    from audiotrain.data import dataset
    from audiotrain.encoders.lazy import LazyEncoder
    from bench_cache import timed
    from bench_common import _now

    timings: dict[str, list[tuple[float, float, float]]] = {}
    timed(timings, dataset, "load_audio", "decode + resample (fixed)")
    original = LazyEncoder.encode

    def encode(self, example):
        t = _now()
        try:
            return original(self, example)
        finally:
            t2 = _now()
            timings.setdefault(STAGES.get(self.name, self.name), []).append((t2[0] - t[0], t2[1] - t[1], t[0]))

    LazyEncoder.encode = encode
    return timings


def _header(plugin: str, args, cache: dict[str, Any]) -> str:
    title = {"valle": "VALL-E (full)", "songgen": "SongGen (mixed_pro)", "tortoise": "TorToiSe (release)"}[plugin]
    return (f"scaled {title}, {bench_scaled.describe(plugin, cache['presets'], args.scale)}. The cache replaces: "
            f"{bench_scaled.FROZEN_NOTE[plugin]}. {args.plugin_clips} clips of the plugin's example data, LoRA r=16, "
            f"batch {args.plugin_batch}")


def _notes(plugin: str, con, args, cache: dict[str, Any], over: list[dict[str, Any]]) -> None:
    """The measured cause where a target is missed: what the frozen encoders cost against the step."""
    import statistics

    from bench_cache_report import cache_ratios

    r = cache_ratios(cache, args.clock)
    runs = cache["runs"]["onthefly"]
    step_ms = 1000 / r["sps"]["onthefly"]
    enc = statistics.mean(sum(v[args.clock] * x.get("encoding_calls", {}).get(k, 1.0)
                              for k, v in x.get("encoding_ms", {}).items()) for x in runs)
    p = cache["presets"]["params"]
    share = sum(v for k, v in p.items() if k != "backbone") / p["backbone"]
    if r["speed"] < 1.5:
        bound = 1 / max(1 - enc / step_ms, 1e-9)
        cached_ms = 1000 / r["sps"]["cached"]
        con.print(f"  cause (speed): the encoding the cache saves is {enc:.0f} ms of the {step_ms:.0f} ms on-the-fly step "
                  f"({100 * enc / step_ms:.0f}%; the cached step is {cached_ms:.0f} ms), so at most 1 / (1 - "
                  f"{enc / step_ms:.2f}) = {bound:.2f}x can be saved"
                  + (": the frozen encoders are cheap relative to the trainable model's forward + backward."
                     if bound < 1.5 else f" (measured: {r['speed']:.2f}x)."))
    if r["mem"] > 0.6 and r["heap"]:
        on, cached = r["heap"]["onthefly"], r["heap"]["cached"]
        frozen_mb = 4 * sum(v for k, v in p.items() if k != "backbone") / 2**20
        con.print(f"  cause (memory): the cache saves {on - cached:.0f} MB of the on-the-fly run's {on:.0f} MB peak heap; "
                  f"the frozen encoders' fp32 weights are {frozen_mb:.1f} MB ({share:.3f} of the trainable model's "
                  f"parameters: weights alone would give 1 / (1 + {share:.3f}) = {1 / (1 + share):.2f}x); the other "
                  f"{cached:.0f} MB - the trainable model's weights, activations, gradients and optimizer state, the "
                  f"batches - a cached run needs as well. (Widths / {args.scale} shrink weights {args.scale}² times "
                  f"but activations only {args.scale} times: at this scale the step's activations weigh about "
                  f"{args.scale}x more against the frozen weights than at release size.)")


def plugin_cases(CacheCase) -> dict[str, Any]:
    out = {}
    for plugin in ("valle", "songgen", "tortoise"):
        bind = lambda fn: functools.partial(fn, plugin)  # noqa: E731
        out[f"cache-{plugin}"] = CacheCase(
            f"cache-{plugin}", plugin, bind(_setup), functools.partial(bench_scaled.install, plugin), bind(_overrides),
            bind(_preload), bind(_stages), bind(_header), frozenset(FROZEN[plugin]), notes=bind(_notes))
    return out
