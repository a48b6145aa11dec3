"""Part 2 of the benchmark: the feature cache (see the docstring of ``experiments/bench.py``)."""
from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import functools  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

from bench_common import (  # noqa: E402
    bench_child, HeapPeak, _status_mb, build_heap_peak, RESULT_TAG, SEED, _base_overrides, _now, _quiet_run_module, _register_configs, _setup_torch, _steps_per_s, _write_songs)

# Release parameter counts (presets.py, dcae_presets.py docstrings; umt5-base encoder; spec for MERT, mHuBERT).
RELEASE = {"transformer": 3_305_659_264, "dcae": 156_812_426, "vocoder": 103_005_138, "umt5": 281_000_000,
           "mert": 315_000_000, "mhubert": 94_400_000}
# The REPA teachers as HuBERT configs (MERT-v1-330M is HuBERT-large shaped, mHuBERT-147 HuBERT-base shaped):
# (hidden, layers, heads, intermediate, feature-extractor norm, stable layer norm, conv bias). The 7-layer conv
# feature extractor (kernels 10,3,3,3,3,2,2, strides 5,2,2,2,2,2,2: 320 samples a frame) is kept; widths / scale.
TEACHERS = {"mert": (1024, 24, 16, 4096, "layer", True, True), "mhubert": (768, 12, 12, 3072, "group", False, False)}
FROZEN = ("dcae", "vocoder", "umt5", "mert", "mhubert")


# ---------------------------------------------------------------------------------------------
# 2. feature cache (one subprocess per mode)
# ---------------------------------------------------------------------------------------------
def scaled_presets(scale: int) -> dict[str, Any]:
    """The release architecture with every width divided by ``scale`` (depths kept), built on the tiny
    presets' keys. The vocoder head and the UMT5 vocabulary, whose shapes do not divide cleanly, are sized
    so every frozen part keeps its release share of the transformer's parameter count."""
    import torch
    import transformers
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
        teachers = {name: teacher_config(spec, k) for name, spec in TEACHERS.items()}
        n_teachers = {name: count(transformers.HubertModel(transformers.HubertConfig(**c))) for name, c in teachers.items()}
    umt5 = {**umt5_base, "vocab_size": vocab}
    return {"transformer": tr, "dcae": dcae, "vocoder": voc, "umt5": umt5, "teachers": teachers,
            "params": {"transformer": n_tr, "dcae": n_dcae, "vocoder": n_voc, "umt5": n_umt5, **n_teachers}}


def teacher_config(spec: tuple, k: int) -> dict[str, Any]:
    """HubertConfig keyword arguments of one REPA teacher with widths / ``k`` (its hidden size is then the scaled
    transformer's ssl_latent_dims entry: 1024 / k, 768 / k)."""
    import math

    hidden, layers, heads, inter, norm, stable, bias = spec
    width = hidden // k  # heads and the positional conv's 16 groups must divide it (768 / 32 = 24: 12 heads, 8 groups)
    return dict(hidden_size=width, num_hidden_layers=layers, num_attention_heads=math.gcd(heads, width),
                intermediate_size=inter // k, conv_dim=[512 // k] * 7, conv_kernel=[10, 3, 3, 3, 3, 2, 2],
                conv_stride=[5, 2, 2, 2, 2, 2, 2], num_conv_pos_embeddings=128,
                num_conv_pos_embedding_groups=math.gcd(16, width),
                feat_extract_norm=norm, do_stable_layer_norm=stable, conv_bias=bias, vocab_size=32)


def write_teachers(folder: Path, p: dict[str, Any]) -> list[str]:
    """The scaled teachers as Hugging Face folders (config.json + model.safetensors, seeded random weights), and
    the overrides that turn REPA on with them (ACE-Step's trainer.py default: ssl_coeff 1.0)."""
    import torch
    import transformers
    from safetensors.torch import save_file

    for i, (name, kwargs) in enumerate(p["teachers"].items()):
        config = transformers.HubertConfig(**kwargs)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED + i)
            model = transformers.HubertModel(config).eval()
        config.save_pretrained(folder / name)
        save_file({key: v.contiguous() for key, v in model.state_dict().items()}, str(folder / name / "model.safetensors"))
    return [f"model.ssl.mert_path={folder / 'mert'}", f"model.ssl.mhubert_path={folder / 'mhubert'}", "model.ssl_coeff=1.0"]


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
    from audiotrain.encoders.lazy import LazyEncoder

    built: set[str] = set()
    original = LazyEncoder.get

    def get(self):
        if self._inner is None:
            built.add(self.name)
        return original(self)

    LazyEncoder.get = get
    return built


@dataclass
class CacheCase:
    """What part 2's machinery needs of one plugin: its data and scaled presets (parent), how a subprocess
    installs them, composes its run and times the on-the-fly encoding, and how the report names it."""

    part: str  # the --only name
    plugin: str
    setup: Callable[[Any, Path], dict[str, Any]]  # parent: writes data, presets.json, overrides.json; the presets
    install: Callable[[dict[str, Any]], None]  # subprocess: makes model.preset=tiny the scaled presets
    overrides: Callable[[Any, Path, int], list[str]]  # subprocess: the run's overrides (data, steps, batch...)
    preload: Callable[[], None]  # subprocess: imports either mode needs, before the baseline is read
    stages: Callable[[], dict[str, list[tuple[float, float, float]]]]  # subprocess, on the fly: per-call timings
    header: Callable[[Any, dict[str, Any]], str]  # report: what was measured, at which sizes
    frozen_encoders: frozenset[str] = frozenset({"latents", "text", "ssl"})  # the LazyEncoders a cache replaces
    notes: Callable[[Any, Any, dict[str, Any], list[dict[str, Any]]], None] | None = None  # report: after the table


def subprocess_main(args) -> None:
    """``--mode prepare|cached|onthefly`` (``--case PART``): one job, result as one JSON line on stdout."""
    _setup_torch(args.threads)
    work = Path(args.work)
    case = cases()[args.case]
    import torch  # noqa: F401

    from audiotrain.config.compose import _compose
    # Everything either mode imports, before the "after imports" RSS is read (the same baseline for both: the
    # libraries' code is not what the cache saves; at full size it is a few % of a training process).
    import bitsandbytes  # noqa: F401  (the optimizer builder imports it)
    import lightning.pytorch.callbacks  # noqa: F401
    import peft  # noqa: F401

    case.preload()
    runmod, recorders = _quiet_run_module()  # imports run.py, hence lightning
    _register_configs()
    p = json.loads((work / "presets.json").read_text())
    case.install(p)
    built = _track_encoder_builds()
    timings = case.stages() if args.mode == "onthefly" else {}
    steps = args.cache_warmup + args.cache_steps
    overrides = case.overrides(args, work, steps) + json.loads((work / "overrides.json").read_text())
    result: dict[str, Any] = {"mode": args.mode, "params": p["params"]}
    if args.mode == "prepare":
        from audiotrain.plugins import registry
        from audiotrain.train.data_setup import load_data

        cfg = _compose(overrides + ["cache=true"])
        t = time.perf_counter()  # the frozen encoders are built lazily, inside: their loading counts
        items = load_data(cfg, registry.get(case.plugin), work / "runs" / "prepare", "cpu", save_report=False).train
        result.update(items=len(items), prepare_s=time.perf_counter() - t)
    else:
        cfg = _compose(overrides + [f"cache={'true' if args.mode == 'cached' else 'false'}",
                                    f"paths.run_dir={work / 'runs' / f'{args.mode}{args.tag}'}"])
        heap = HeapPeak()
        rss_base, heap_base = _status_mb("VmRSS"), heap.current()
        heap.reset()
        summary = runmod.train(cfg)
        result.update(steps=summary["steps"], steps_per_s=_steps_per_s(recorders[-1].marks, args.cache_warmup),
                      rss_base=rss_base, rss_peak=_status_mb("VmHWM"), heap_base=heap_base, heap_peak=heap.peak(),
                      encoders_built=sorted(built & case.frozen_encoders),
                      **_window_timings(timings, recorders[-1].marks, args.cache_warmup))
    print(RESULT_TAG + json.dumps(result), flush=True)


def timed(timings: dict[str, list[tuple[float, float, float]]], owner: Any, attr: str, label: str) -> None:
    """Record the (wall, CPU, start) time of every call of ``owner.attr`` under ``label``."""
    fn = getattr(owner, attr)
    timings[label] = []

    def wrapper(*a, **kw):
        t = _now()
        try:
            return fn(*a, **kw)
        finally:
            t2 = _now()
            timings[label].append((t2[0] - t[0], t2[1] - t[1], t[0]))

    setattr(owner, attr, wrapper)


def _window_timings(timings: dict[str, list[tuple[float, float, float]]], marks: list, warmup: int) -> dict[str, Any]:
    """Median ms per call and calls per step of each stage, over the calls inside the timed steps (after the
    warm-up; not the fixed-noise evaluations before and after training)."""
    lo, hi = marks[warmup - 1][1], marks[-1][1]
    steps = max(marks[-1][0] - marks[warmup - 1][0], 1)
    inside = {k: [c for c in v if lo <= c[2] <= hi] for k, v in timings.items()}
    return {"encoding_ms": {k: {"wall": 1000 * statistics.median(c[0] for c in v),
                                "cpu": 1000 * statistics.median(c[1] for c in v)} for k, v in inside.items() if v},
            "encoding_calls": {k: len(v) / steps for k, v in inside.items() if v}}


def _time_encoding() -> dict[str, list[tuple[float, float, float]]]:
    """Per-call (wall, CPU) time of each stage of on-the-fly encoding (what the cache saves every step)."""
    from audiotrain.data import dataset
    from audiotrain_acestep import dcae, lyric_features, mel, music_dcae, ssl_teachers, text_encoder

    timings: dict[str, list[tuple[float, float, float]]] = {}
    mark = functools.partial(timed, timings)
    mark(dataset, "load_audio", "decode mp3 + resample to 48 kHz (fixed)")
    mark(music_dcae, "resample", "resample 48 -> 44.1 kHz (fixed)")
    mark(mel.LogMelSpectrogram, "forward", "log-mel (fixed)")
    mark(dcae.DCAEEncoder, "forward", "DC-AE encoder (scaled)")
    mark(text_encoder.TextEncoder, "encode_prompts", "UMT5 (scaled)")
    mark(lyric_features.LyricTokenizerFeature, "encode", "lyric tokenizer (fixed)")
    mark(ssl_teachers.SSLTeacherFeature, "encode", "REPA teachers: resample + MERT + mHuBERT (scaled)")
    return timings


def _run_child(args, mode: str, work: Path, case: CacheCase, tag: str = "") -> dict[str, Any]:
    extra = ["--case", case.part, "--songs", str(args.songs), "--plugin-batch", str(args.plugin_batch),
             "--plugin-clips", str(args.plugin_clips), "--seconds", str(args.seconds), "--cache-warmup",
             str(args.cache_warmup), "--cache-steps", str(args.cache_steps), "--tag", tag]
    return bench_child(args, mode, work, extra, args.heap_peak if mode != "prepare" else "")


def feature_cache(args, work: Path, case: CacheCase | None = None) -> dict[str, Any]:
    """Part 2 for one case (ACE-Step's by default): a prepare subprocess, then cached / on-the-fly subprocesses
    in ABBA order; every subprocess is a fresh ``run.train`` with the heap counter preloaded."""
    case = case or cases()["cache"]
    t0 = time.perf_counter()
    presets = case.setup(args, work)
    shim = build_heap_peak(work)
    args.heap_peak = str(shim) if shim else ""
    if not shim:
        print("  (no C compiler: peak memory is measured as RSS only)", flush=True)
    prep = _run_child(args, "prepare", work, case)
    runs: dict[str, list[dict[str, Any]]] = {"cached": [], "onthefly": []}
    for i in range(args.cache_rounds):
        order = ("cached", "onthefly") if i % 2 == 0 else ("onthefly", "cached")  # ABBA
        for mode in order:
            r = _run_child(args, mode, work, case, tag=str(i))
            runs[mode].append(r)
            print(f"  round {i + 1}/{args.cache_rounds} {mode:8s}: {r['steps_per_s'][args.clock]:.3f} steps/s "
                  f"({args.clock} clock), "
                  f"peak RSS {r['rss_peak']:.0f} MB (after imports {r['rss_base']:.0f} MB)"
                  + (f", peak heap {r['heap_peak'] - r['heap_base']:.0f} MB above imports" if r["heap_peak"] else ""),
                  flush=True)
    return {"case": case.part, "presets": presets, "prepare": prep, "runs": runs, "seconds": time.perf_counter() - t0}


def _acestep_setup(args, work: Path) -> dict[str, Any]:
    _write_songs(work / "songs", count=args.songs, seconds=args.seconds)
    presets = scaled_presets(args.scale)
    (work / "presets.json").write_text(json.dumps(presets))
    # ACE-Step's trainer.py setup, which both modes share: REPA on (its teachers are frozen encoders too) unless
    # --no-repa, gradient checkpointing as the plugin's default (trainer.py always enables it)
    extra = [] if args.no_repa else write_teachers(work / "teachers", presets)
    (work / "overrides.json").write_text(json.dumps(extra))
    return presets


def _acestep_preload() -> None:
    from transformers.models.hubert import modeling_hubert  # noqa: F401  (the teachers' code)

    from audiotrain_acestep import dcae, encoders, lyric_features, mel, music_dcae, text_encoder  # noqa: F401


def _acestep_overrides(args, work: Path, steps: int) -> list[str]:
    # One pass over the songs per epoch, as with real data; the steps are long enough that epoch boundaries
    # cost nothing measurable, and the fixed-noise train_fixed/loss (start and end of every run) then evaluates only these songs.
    return _base_overrides(work / "songs", work, steps, repeat=1)


def _acestep_header(args, cache: dict[str, Any]) -> str:
    p = cache["prepare"]["params"]
    n = p["transformer"]
    parts = [k for k in FROZEN if k in p and (k not in TEACHERS or not args.no_repa)]
    frozen = sum(p[k] for k in parts)
    rel_frozen = sum(RELEASE[k] for k in parts) / RELEASE["transformer"]
    shares = ", ".join(f"{k} {p[k] / 1e6:.2f} M ({p[k] / n:.3f}, release {RELEASE[k] / RELEASE['transformer']:.3f})"
                       for k in parts)
    return (f"scaled ACE-Step (release widths / {args.scale}, depths kept): transformer "
            f"{n / 1e6:.2f} M; frozen: {shares}; frozen / transformer = {frozen / n:.3f} (release {rel_frozen:.3f}). "
            + ("REPA off (--no-repa). " if args.no_repa else "REPA on with scaled MERT and mHuBERT (ssl_coeff 1.0, "
               "trainer.py's default). ")
            + f"Gradient checkpointing as the plugin's default (trainer.py: always). {args.songs} songs x "
            f"{args.seconds:g} s mp3, batch 1")


def _acestep_notes(con, args, cache: dict[str, Any], over: list[dict[str, Any]]) -> None:
    p = cache["prepare"]["params"]
    parts = [k for k in FROZEN if k in p and (k not in TEACHERS or not args.no_repa)]
    share = sum(p[k] for k in parts) / p["transformer"]
    con.print("  Peak memory is the high-water mark of the heap bytes in use (experiments/heap_peak.c, preloaded): "
              "the CPU counterpart of a GPU's peak allocated memory. The peak RSS beside it also counts the pages "
              "of library code a run touches and what the allocator keeps after frees, which at this scale are "
              "as large as the model's data.")
    con.print(f"  For scale: counting weights alone the ratio would be 1 / (1 + {share:.3f}) = "
              f"{1 / (1 + share):.2f}x; the rest of the saving is the encoders' work on the audio (decoded "
              "audio, resampling, mel, DC-AE and teacher activations), none of which a cached run does.")
    sps = statistics.mean(r["steps_per_s"][args.clock] for r in cache["runs"]["cached"])
    if over and over[-1]["cost_ms"] > 0:
        step, cost = 1000 / sps, over[-1]["cost_ms"]
        con.print(f"  (extrapolation, not a measurement: part 1's framework cost of {cost:.1f} ms per step, "
                  f"added to this model's {step:.0f} ms cached step, would be a ratio of {step / (step + cost):.3f})")


def cases() -> dict[str, CacheCase]:
    """Every case of part 2 by its --only name: ACE-Step's here, the token models' in bench_cache_plugins."""
    from bench_cache_plugins import plugin_cases

    acestep = CacheCase("cache", "acestep", _acestep_setup, _install_presets, _acestep_overrides, _acestep_preload,
                        _time_encoding, _acestep_header, notes=_acestep_notes)
    return {"cache": acestep, **plugin_cases(CacheCase)}
