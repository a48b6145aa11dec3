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

Rows (each a fresh subprocess):

* ``lora``        LoRA r=16 (the plugin's default targets and optimizer), bf16-mixed, cached features, gradient
                  checkpointing on, weights the forward pass never reads released, the frozen base in bf16
                  (``model.frozen_dtype=auto``): the framework's defaults;
* ``lora_nockpt`` the same without gradient checkpointing (TorToiSe: its preset's GPT-2 ``checkpointing`` off);
* ``full_adamw``  full fine-tune (``lora=none``), bf16-mixed, gradient checkpointing on, fp32 AdamW;
* ``full_8bit``   the same with bitsandbytes' AdamW8bit (embeddings keep 32-bit state, the framework's default);
* ``lora_fp32base`` the ``lora`` row with ``model.frozen_dtype=fp32`` (the default before it existed; depths only);
* ``qlora_nf4`` / ``qlora_int8`` the ``lora`` row with ``model.quantize=nf4`` / ``int8`` (bitsandbytes' CPU path; the
                  linear layers it cannot quantise held in bf16 as in ``lora``; depths only);
* ``lora_240s``   ACE-Step only: the ``lora`` row at a 240 s clip (``dataset.max_duration``'s default, the longest clip
                  audiotrain trains), for the comparison with what people report (depths only);
* ``original``    the original trainer's set-up. ACE-Step (trainer.py): LoRA r=16 with nothing released, the
                  four frozen encoders - DC-AE (music_dcae + vocoder), UMT5-base, the REPA teachers MERT-v1-330M
                  and mHuBERT-147 - built at release size in fp32 and run on every step on the raw 48 kHz stereo
                  clip at batch 1 (REPA on, ssl_coeff 1.0, gradient checkpointing as trainer.py always does).
                  TorToiSe (DLAS): the same LoRA step with the mel and the DVAE codes (release DVAE, fp32) of the
                  padded wav and the conditioning mels computed on every step. VALL-E / SongGen: n/a. Both with
                  ``model.frozen_dtype=fp32``: the originals keep their frozen weights in fp32.

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
* TorToiSe 11.6 s - DLAS pads every clip to 255,995 samples (250 DVAE codes, 2 conditioning crops of 172 frames).

The table's main value is the step's peak (its phases - the original set-ups' per-step encoding, the step itself -
each extrapolated on its own, the larger taken); the peak while building the model is a column of its own.

Targets: LoRA r=16 peak <= 0.5 x the full fine-tune's (fp32 AdamW); AdamW8bit optimizer state <= 0.3 x fp32 AdamW's;
ACE-Step's LoRA step <= 0.5 x the original trainer's set-up. A benchmark never fails the build (exit 0 on missed
targets). The table is printed and written to ``docs/memory.md``.

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
from bench_common import RESULT_TAG, SEED, HeapPeak, _loadavg, _status_mb, build_heap_peak  # noqa: E402

GB = 1e9
PLUGINS = ("acestep", "valle", "songgen", "tortoise")
ROWS = ("lora", "lora_nockpt", "full_adamw", "full_8bit", "original", "lora_fp32base", "qlora_nf4", "qlora_int8",
        "lora_240s")
ROW_TITLES = {"lora": "LoRA r=16, bf16, defaults (ckpt on, cached, unused released, frozen base in bf16)",
              "lora_nockpt": "LoRA r=16, bf16, no gradient checkpointing",
              "full_adamw": "full fine-tune, fp32 AdamW",
              "full_8bit": "full fine-tune, 8-bit AdamW",
              "original": "original trainer's set-up",
              "lora_fp32base": "LoRA row with model.frozen_dtype=fp32 (frozen base in fp32, the earlier default)",
              "qlora_nf4": "QLoRA r=16: LoRA row with model.quantize=nf4",
              "qlora_int8": "QLoRA r=16: LoRA row with model.quantize=int8",
              "lora_240s": "LoRA row at a 240 s clip (2584 latent frames)"}
ROW_PLUGINS = {"lora_240s": ("acestep",)}  # rows measured for some plugins only
ROW_CLIP = {"lora_240s": 240.0}  # rows at another clip length than the plugin's CLIP
HAS_ORIGINAL = {"acestep", "tortoise"}
ORIGINAL_NOTE = {
    "acestep": "trainer.py: LoRA r=16, nothing released; DC-AE + vocoder, UMT5-base, MERT-v1-330M, mHuBERT-147 in "
               "fp32 run every step on the raw clip, batch 1",
    "tortoise": "DLAS: the mel and DVAE codes (release DVAE) of the padded wav and the conditioning mels computed "
                "every step",
    "valle": "n/a (no per-step frozen encoder in the original's training loop besides cached codes)",
    "songgen": "n/a",
}
RELEASE_DEPTH = {"acestep": 24, "valle": 12, "songgen": 24, "tortoise": 30}
PRESET = {"acestep": "v1-3.5b", "valle": "full", "songgen": "mixed_pro", "tortoise": "release"}
CLIP = {"acestep": 60.0, "valle": 10.0, "songgen": 30.0, "tortoise": 11.609750566893424}
CLIP_WHY = {"acestep": "60 s: a typical training excerpt (646 latent frames)",
            "valle": "10 s: a typical utterance (750 codec frames x 8, 4.5 s prompt)",
            "songgen": "30 s: its maximum (1500 frames x 8 codebooks)",
            "tortoise": "11.6 s: DLAS pads every clip to it (250 codes)"}
# fit whole: measured at release depth too, as a check of the extrapolation (SongGen without gradient
# checkpointing would not: ~1 GB of activations a block at 30 s)
FULL_CHECK = {"valle": ROWS[:5], "tortoise": ROWS[:5], "songgen": ("lora", "full_adamw", "full_8bit")}


def heavy(spec: dict[str, Any]) -> bool:
    """Measurements that need more than ~6 GB: at most one of them runs at a time (24 GiB machine)."""
    p, row, d = spec["plugin"], spec["row"], int(spec["depth"])
    return (p == "acestep" and row in ("full_adamw", "full_8bit", "original")) or (
        p in ("songgen", "tortoise") and d == RELEASE_DEPTH[p] and row != "lora")


# ---------------------------------------------------------------------------------------------
# the child: one measurement
# ---------------------------------------------------------------------------------------------
def _set_depth(plugin: str, depth: int, row: str) -> str:
    """Make the preset the config names be the release architecture with ``depth`` repeated blocks (in this
    process only; plugin code unchanged). Returns the preset name to compose with."""
    if plugin == "acestep":
        from audiotrain_acestep import presets

        # the release path reads weights from model.checkpoint_dir; the seeded random path is the "tiny" key's
        # REPA (the original row) reads block 8's states: at fewer blocks, the last block's (same shapes)
        presets.PRESETS["tiny"] = {**presets.V1_3_5B, "num_layers": depth,
                                   "ssl_encoder_depths": [min(d, depth - 1) for d in presets.V1_3_5B["ssl_encoder_depths"]]}
        return "tiny"
    if plugin == "valle":
        from audiotrain_valle import presets

        presets.PRESETS["full"] = {**presets.PRESETS["full"], "layers": depth}
        return "full"
    if plugin == "songgen":
        from audiotrain_songgen import presets

        presets.MIXED_PRO["decoder"]["num_hidden_layers"] = depth
        return "mixed_pro"
    if plugin == "tortoise":
        from audiotrain_tortoise import presets

        presets.PRESETS["release"].update(layers=depth, checkpointing=row != "lora_nockpt")
        return "release"
    raise ValueError(plugin)


def _overrides(plugin: str, preset: str, row: str) -> list[str]:
    o = [f"model={plugin}", f"model.preset={preset}", "tracking=none", "trainer.accelerator=cpu",
         "precision=bf16-mixed", f"seed={SEED}", "dataset.num_workers=0"]
    if row.startswith("full"):
        o += ["lora=none", f"optimizer={'adamw' if row == 'full_adamw' else 'adamw8bit'}"]
    else:
        o.append("lora.r=16")
    if row in ("lora_fp32base", "original"):  # the originals keep their frozen weights in fp32
        o.append("model.frozen_dtype=fp32")
    if row.startswith("qlora_"):
        o.append(f"model.quantize={row.split('_', 1)[1]}")
    o.append(f"trainer.gradient_checkpointing={'false' if row == 'lora_nockpt' else 'true'}")
    if plugin == "acestep" and row == "original":
        o.append("model.ssl_coeff=1.0")
    return o


def _items(plugin: str, seconds: float, g: Any, widths: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """One example's cached features, as the plugin's feature cache holds them, random values. ``widths``: the
    feature widths of a scaled model (SongGen's ``text`` and ``mert``; default the release's 1024)."""
    import torch

    w = {"text": 1024, "mert": 1024, **(widths or {})}
    if plugin == "acestep":
        frames = -(-(-(-int(seconds * 48000) * 44100 // 48000)) // 4096)  # ceil(ceil(N*44100/48000)/4096)
        return [{"latents": torch.randn(8, 16, frames, generator=g), "text_hidden": torch.randn(64, 768, generator=g),
                 "text_mask": torch.ones(64), "lyric_token_ids": torch.randint(1, 6693, (512,), generator=g),
                 "lyric_mask": torch.ones(512), "speaker_emb": torch.zeros(512)}]
    if plugin == "valle":
        frames, prompt = int(seconds * 75), int(4.5 * 75)
        return [{"phns": torch.randint(0, 256, (int(15 * seconds),), generator=g),
                 "codes": torch.randint(0, 1024, (frames, 8), generator=g),
                 "prompt": [{"codes": torch.randint(0, 1024, (prompt, 8), generator=g)}]}]
    if plugin == "songgen":
        frames = int(seconds * 50)
        return [{"codes_mix": torch.randint(0, 1024, (8, frames), generator=g),
                 "codes_vocal": torch.randint(0, 1024, (8, frames), generator=g),
                 "codes_acc": torch.randint(0, 1024, (8, frames), generator=g),
                 "text_hidden": torch.randn(64, w["text"], generator=g), "text_mask": torch.ones(64),
                 "lyrics_ids": torch.randint(1, 7000, (300,), generator=g),
                 "mert_hidden": torch.randn(224, 25, w["mert"], generator=g).half(), "voice_on": torch.tensor(True)}]
    if plugin == "tortoise":  # 11.6 s (255,995 samples): 160 text ids; shorter clips fewer. Codes: of the wav padded
        samples = round(seconds * 22050)  # to 255,995 samples (250), as cached; the model crops to the batch's longest
        return [{"text_ids": torch.randint(1, 255, (max(1, round(160 * samples / 255995)),), generator=g),
                 "codes": torch.randint(0, 8192, (250,), generator=g),
                 "wav_length": torch.tensor(samples),
                 "conditioning": [{"mel": torch.randn(80, 172, generator=g), "mel_length": 172} for _ in range(2)]}]
    raise ValueError(plugin)


def _acestep_original(seconds: float, tcfg: dict[str, Any], device: str = "cpu"):
    """trainer.py's frozen encoders at release size (fp32, random weights) and the per-step encoding of the raw
    clip: DC-AE latents, UMT5 states of the prompt, the REPA teachers' features. Returns (modules, encode)."""
    import torch
    import transformers
    from transformers import UMT5EncoderModel

    from audiotrain_acestep import text_encoder
    from audiotrain_acestep.music_dcae import MusicDCAE
    from audiotrain_acestep.ssl_teachers import MERT, MHUBERT, SSLTeacherFeature
    from bench_cache import TEACHERS, teacher_config

    torch.manual_seed(SEED)
    dcae = MusicDCAE.from_preset("v1").eval().requires_grad_(False)
    c = text_encoder.tiny_umt5_config()
    for key, val in dict(d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_heads=12, vocab_size=256384).items():
        setattr(c, key, val)
    umt5 = UMT5EncoderModel(c).eval().requires_grad_(False)
    teachers = SSLTeacherFeature([(spec, transformers.HubertModel(transformers.HubertConfig(**teacher_config(TEACHERS[k], 1))))
                                  for spec, k in ((MERT, "mert"), (MHUBERT, "mhubert"))])
    g = torch.Generator().manual_seed(SEED + 1)
    audio = (0.1 * torch.randn(2, int(seconds * 48000), generator=g)).to(device)
    ids = torch.randint(1, 256384, (1, 64), generator=g).to(device)
    for module in (dcae, umt5, teachers):  # on the GPU for make bench-gpu (tests/gpu), else where they are
        if device != "cpu":
            module.to(device)

    @torch.no_grad()
    def encode() -> dict[str, Any]:
        latents, _ = dcae.encode(audio[None], torch.tensor([audio.shape[-1]], device=audio.device))
        hidden = umt5(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
        feats = {"latents": latents[0].float(), "text_hidden": hidden[0].float(), "text_mask": torch.ones(64),
                 "lyric_token_ids": torch.randint(1, 6693, (512,), generator=g), "lyric_mask": torch.ones(512),
                 "speaker_emb": torch.zeros(int(tcfg["speaker_embedding_dim"]))}
        feats.update(teachers.encode({"audio": audio}))
        return {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in feats.items()}  # collated as cached

    counts = {"dcae": sum(p.numel() for p in dcae.dcae.parameters()),
              "vocoder": sum(p.numel() for p in dcae.vocoder.parameters()),
              "umt5": sum(p.numel() for p in umt5.parameters()),
              "mert": sum(p.numel() for p in teachers.models[0].parameters()),
              "mhubert": sum(p.numel() for p in teachers.models[1].parameters())}
    return counts, encode


def _tortoise_original(cfg: Any):
    """DLAS's per-step front end: the mel of the clip, the release DVAE's codes of the padded wav, the conditioning
    mels (two 172-frame crops of the clip's mel), all fp32."""
    import torch

    from audiotrain_tortoise.dvae import DiscreteVAE
    from audiotrain_tortoise.features import PADDED_SAMPLES, SpeechFrontEnd
    from audiotrain_tortoise.mel import MelSpectrogram

    torch.manual_seed(SEED)
    front = SpeechFrontEnd(MelSpectrogram(None), DiscreteVAE("release")).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(SEED + 1)
    wav = 0.1 * torch.randn(PADDED_SAMPLES, generator=g)

    def encode() -> dict[str, Any]:
        out = front(wav)
        mel = out["mel"]
        crops = [{"mel": mel[:, s:s + 172].contiguous(), "mel_length": 172} for s in (0, mel.shape[-1] - 172)]
        return {"text_ids": torch.randint(1, 255, (160,), generator=g), "codes": out["codes"],
                "wav_length": out["wav_length"], "conditioning": crops}

    return {"dvae": sum(p.numel() for p in front.dvae.parameters())}, encode


def child_main(spec: dict[str, Any]) -> None:
    import torch

    torch.set_num_threads(int(spec["threads"]))
    import warnings

    warnings.filterwarnings("ignore")
    # every library any row imports, before the baseline is read
    import bitsandbytes  # noqa: F401
    import peft  # noqa: F401
    import transformers  # noqa: F401
    from transformers.models.hubert import modeling_hubert  # noqa: F401
    from transformers.models.umt5 import modeling_umt5  # noqa: F401

    from audiotrain.config import resolvers
    from audiotrain.config.compose import _compose
    from audiotrain.plugins import registry
    from audiotrain.train.model_setup import build_model
    from audiotrain.train.optim import build_optimizer, embedding_weights
    from audiotrain.train.param_groups import torch_param_groups

    resolvers.register()
    registry.register_configs()
    plugin_name, row, depth = spec["plugin"], spec["row"], int(spec["depth"])
    plugin = registry.get(plugin_name)
    __import__(f"audiotrain_{plugin_name}.backbone")
    heap = HeapPeak()
    t0 = time.perf_counter()
    heap_base, rss_base = heap.current(), _status_mb("VmRSS")
    heap.reset()

    preset = _set_depth(plugin_name, depth, row)
    if plugin_name == "valle":  # the EnCodec decoder only renders samples (never built in a step): no folder
        from audiotrain_valle import encoders as valle_encoders

        valle_encoders.codec_factory = lambda cfg: (None, None)
    cfg = _compose(_overrides(plugin_name, preset, row))
    if row == "original" and plugin_name == "acestep":
        # the original trainer keeps every weight (nothing released): the framework's release step is skipped
        from audiotrain.models.backbone import Backbone

        from audiotrain_acestep.backbone import ACEStepBackbone

        ACEStepBackbone.release_unused_weights = Backbone.release_unused_weights
    built = build_model(cfg, plugin, report=False)
    backbone = built.backbone
    backbone.train()
    encoders: dict[str, int] = {}
    encode = None
    if row == "original" and plugin_name == "acestep":
        from audiotrain_acestep.encoders import transformer_config

        encoders, encode = _acestep_original(CLIP[plugin_name], transformer_config(cfg))
    elif row == "original" and plugin_name == "tortoise":
        encoders, encode = _tortoise_original(cfg)
    opt = build_optimizer(cfg.optimizer, torch_param_groups(backbone, cfg.optimizer),
                          full_state=embedding_weights(backbone))
    heap_built = heap.current()
    t_built = time.perf_counter()
    # the peak of each phase (build, per-step encoding, the step), so each can be extrapolated on its own
    phases = {"build": heap.peak()}
    heap.reset()

    g = torch.Generator().manual_seed(SEED)
    items = [encode()] if encode is not None else _items(plugin_name, ROW_CLIP.get(row, CLIP[plugin_name]), g)
    t_encoded = time.perf_counter()
    phases["encode"] = heap.peak()
    heap.reset()
    batch = plugin.collate(items)
    gen = torch.Generator().manual_seed(SEED)
    backbone.training_progress(0, 1000)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = backbone.training_losses(batch, generator=gen)
    loss = losses["loss"]
    loss.backward()
    trainable = [p for p in backbone.parameters() if p.requires_grad]
    grad_bytes = sum(p.grad.numel() * p.grad.element_size() for p in trainable if p.grad is not None)
    clip = float(cfg.trainer.gradient_clip_val or 0)
    if clip:
        torch.nn.utils.clip_grad_norm_(trainable, clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    t_step = time.perf_counter()
    phases["step"] = heap.peak()
    state_bytes = 0
    for st in opt.state.values():
        for v in st.values():
            if isinstance(v, torch.Tensor):
                state_bytes += v.numel() * v.element_size()
    params = list(backbone.parameters())
    result = {
        **spec, "preset_key": preset, "loss": float(loss.detach()),
        "heap_peak_gb": (max(phases.values()) - heap_base) * 2**20 / GB if heap_base is not None else None,
        **{f"heap_{k}_gb": (v - heap_base) * 2**20 / GB if heap_base is not None else None for k, v in phases.items()},
        "heap_built_gb": (heap_built - heap_base) * 2**20 / GB if heap_built is not None else None,
        "rss_peak_gb": (_status_mb("VmHWM") - rss_base) * 2**20 / GB,
        "param_bytes": sum(p.numel() * p.element_size() for p in params),
        "params": sum(p.numel() for p in params), "trainable": sum(p.numel() for p in trainable),
        "trainable_bytes": sum(p.numel() * p.element_size() for p in trainable),
        "grad_bytes": grad_bytes, "state_bytes": state_bytes, "released": built.released, "encoders": encoders,
        "held_bf16": built.held_bf16, "quantised": built.quantised,
        "build_s": t_built - t0, "encode_s": t_encoded - t_built, "step_s": t_step - t_built,
    }
    print(RESULT_TAG + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------
# the parent: run every measurement, extrapolate, report
# ---------------------------------------------------------------------------------------------
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


def _fmt(x: float | None, nd: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}"


def report(summary: dict[str, Any], args, elapsed: float, load0: str, load1: str, note: str = "") -> str:
    """The markdown table (also printed)."""
    lines = ["# Peak memory of one training step at release size (`make bench-memory`)", "",
             "Generated by `experiments/bench_memory.py` (see its docstring for the method). One training step "
             "(forward, backward, clipping, optimizer step) of each plugin's released preset with random weights on "
             "the CPU, batch 1, `precision=bf16-mixed` (autocast; the weights stay fp32 except a LoRA run's frozen "
             "linear/conv weights, which `model.frozen_dtype=auto` holds in bf16: the same step, bit for bit). "
             "**Step peak** = high-water mark of the heap bytes in use (malloc shim `experiments/heap_peak.c`) during "
             "one step - the original set-ups' per-step encoding included - above the heap after imports, in GB "
             "(1e9 bytes), with the model, its gradients and the optimizer resident; the targets are judged on it. "
             "**Load peak** = the high-water mark while building the model and optimizer (seeded random init; a LoRA "
             "run builds the whole model before it releases the weights the forward pass never reads, so this can "
             "exceed the step's peak). Weights / grads / optimizer state are exact tensor bytes after the step. "
             f"Each model is built with every release width and {args.depths[0]} and {args.depths[1]} of its "
             "repeated transformer blocks, each in a fresh subprocess, and extrapolated linearly per block to the "
             "release depth; the models that fit whole (VALL-E, TorToiSe; SongGen's LoRA and full fine-tune rows) are "
             "also measured at release depth: those rows say *measured*, with the extrapolation's error against the "
             "measurement. Batch 1 everywhere (one clip; the configured batches - VALL-E 16, SongGen 4, TorToiSe 32 "
             "- multiply the activation part only).", ""]
    targets: list[tuple[str, str, bool | None, str]] = []
    for plugin, rows in summary.items():
        L = RELEASE_DEPTH[plugin]
        lines += [f"## {plugin} `{PRESET[plugin]}` ({L} blocks) - clip {CLIP_WHY[plugin]}", "",
                  "| set-up | step peak GB | vs full fp32 AdamW | load peak GB | weights GB | trainable params | grads GB "
                  "| optimizer state GB | source | extrapolation error |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
        full = rows.get("full_adamw", {}).get("value")
        for row in ROWS:
            e = rows.get(row)
            if e is None:
                if row == "original" and plugin not in HAS_ORIGINAL:
                    lines.append(f"| {ROW_TITLES[row]} | n/a | | | | | | | {ORIGINAL_NOTE[plugin]} | |")
                continue
            v = e.get("value")
            if v is None:
                lines.append(f"| {ROW_TITLES[row]} | failed | | | | | | | {'; '.join(e['errors'])[:200]} | |")
                continue
            ratio = v["step_peak_gb"] / full["step_peak_gb"] if full else None
            phase = v.get("phase")
            err = e.get("extrap_error")
            src = e["source"]
            if "depth_values" in e:
                src += " (" + ", ".join(f"d{d}: {x:.2f}" for d, x in e["depth_values"].items()) + ")"
            if phase == "encode":
                src += "; peak while encoding"
            lines.append(f"| {ROW_TITLES[row]} | {v['step_peak_gb']:.2f} | {_fmt(ratio) + 'x' if ratio else 'n/a'} | "
                         f"{v['heap_build_gb']:.2f} | {v['param_bytes'] / GB:.2f} | "
                         f"{v['trainable'] / 1e6:,.1f} M | {v['grad_bytes'] / GB:.2f} | {v['state_bytes'] / GB:.3f} | {src} | "
                         + (f"{100 * err:+.1f}%" if err is not None else "") + " |")
        lora = rows.get("lora", {}).get("value")
        b8 = rows.get("full_8bit", {}).get("value")
        orig = rows.get("original", {}).get("value")
        if lora and full:
            r = lora["step_peak_gb"] / full["step_peak_gb"]
            targets.append((plugin, "LoRA r=16 peak <= 0.5 x full fine-tune (fp32 AdamW)", r <= 0.5, f"{r:.2f}x"))
        if b8 and full and full["state_bytes"]:
            r = b8["state_bytes"] / full["state_bytes"]
            targets.append((plugin, "8-bit AdamW optimizer state <= 0.3 x fp32 AdamW's", r <= 0.3, f"{r:.3f}x"))
        f32 = rows.get("lora_fp32base", {}).get("value")
        if f32 and orig:
            r = f32["step_peak_gb"] / orig["step_peak_gb"]
            targets.append((plugin, "LoRA with model.frozen_dtype=fp32 vs the original set-up", None, f"{r:.2f}x"))
        if lora and f32:
            lines += ["", f"The frozen base in bf16 (`model.frozen_dtype=auto`, the default at bf16-mixed) holds "
                      f"{lora['param_bytes'] / GB:.2f} GB of weights instead of {f32['param_bytes'] / GB:.2f} GB: the "
                      f"step's peak is {lora['step_peak_gb']:.2f} GB instead of {f32['step_peak_gb']:.2f} GB "
                      f"({lora['step_peak_gb'] / f32['step_peak_gb']:.2f}x); the step computes the same numbers "
                      "(tests/core/test_frozen_dtype.py)."]
        if lora and orig:
            r = lora["step_peak_gb"] / orig["step_peak_gb"]
            judged = plugin == "acestep"
            targets.append((plugin, "LoRA step <= 0.5 x the original trainer's set-up" + ("" if judged else " (context)"),
                            (r <= 0.5) if judged else None, f"{r:.2f}x"))
        if plugin == "acestep":
            from bench_memory_compare import reported_lines

            lines += reported_lines(rows)
        enc = next((e.get("encoders") for e in rows.values() if e.get("encoders")), None)
        if enc:
            lines += ["", "Original set-up's frozen encoders (random weights, fp32): "
                      + ", ".join(f"{k} {n / 1e6:.1f} M" for k, n in enc.items()) + "."]
        lines.append("")
    lines += ["## Targets", "", "| plugin | target | value | met |", "|---|---|---:|---|"]
    for plugin, what, ok, val in targets:
        lines.append(f"| {plugin} | {what} | {val} | {'met' if ok else ('not met' if ok is not None else 'context')} |")
    lines += ["", f"Whole bench: {elapsed / 60:.1f} min on {os.cpu_count()} cores (load average before {load0}, after "
              f"{load1}); {args.jobs} measurement(s) at a time, {args.threads} torch thread(s) each." + (f" {note}" if note else ""), ""]
    return "\n".join(lines)


def _parse_args(argv: list[str] | None = None):
    p = argparse.ArgumentParser(description="Peak memory of one training step of each plugin's released model.")
    p.add_argument("--only", action="append", default=None, help="plugin(s) to measure (default: all)")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated rows (default: {','.join(ROWS)})")
    p.add_argument("--depths", default="2,4", help="the two block depths measured and extrapolated from")
    p.add_argument("--no-full", action="store_true", help="skip the full-depth measurements (VALL-E, TorToiSe)")
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
                if (row == "original" and plugin not in HAS_ORIGINAL) or plugin not in ROW_PLUGINS.get(row, PLUGINS):
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
            tag = f"{spec['plugin']:8s} {spec['row']:11s} depth {spec['depth']:2d}"
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
