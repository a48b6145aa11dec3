"""The rows and systems of ``make bench-memory``: what each row sets up, each system's released preset, depth and
representative clip length, and the config overrides and depth patch one measurement composes with.

Rows (each a fresh subprocess; the method is in ``bench_memory.py``'s docstring):

* ``lora``        LoRA r=16 (the plugin's default targets and optimizer), bf16-mixed, cached features, gradient
                  checkpointing on, weights the forward pass never reads released, the frozen base in bf16
                  (``model.frozen_dtype=auto``): the framework's defaults;
* ``lora_nockpt`` the same without gradient checkpointing (TorToiSe: its preset's GPT-2 ``checkpointing`` off);
* ``full_adamw``  full fine-tune (``lora=none``), bf16-mixed, gradient checkpointing on, fp32 AdamW;
* ``full_8bit``   the same with bitsandbytes' AdamW8bit (embeddings keep 32-bit state, the framework's default);
* ``lora_fp32base`` the ``lora`` row with ``model.frozen_dtype=fp32`` (the default before it existed; depths only);
* ``qlora_nf4`` / ``qlora_int8`` the ``lora`` row with ``model.quantize=nf4`` / ``int8`` (bitsandbytes' CPU path; the
                  linear layers it cannot quantise held in bf16 as in ``lora``; depths only);
* ``lora_240s``   ACE-Step (v1 and 1.5) only: the ``lora`` row at a 240 s clip (``dataset.max_duration``'s default,
                  the longest clip audiotrain trains; ACE-Step 1.5's maximum), for the comparison with what people
                  report;
* ``original``    the original trainer's set-up. ACE-Step (trainer.py): LoRA r=16 with nothing released, the
                  four frozen encoders - DC-AE (music_dcae + vocoder), UMT5-base, the REPA teachers MERT-v1-330M
                  and mHuBERT-147 - built at release size in fp32 and run on every step on the raw 48 kHz stereo
                  clip at batch 1 (REPA on, ssl_coeff 1.0, gradient checkpointing as trainer.py always does).
                  TorToiSe (DLAS): the same LoRA step with the mel and the DVAE codes (release DVAE, fp32) of the
                  padded wav and the conditioning mels computed on every step. VALL-E / SongGen: n/a. Both with
                  ``model.frozen_dtype=fp32``: the originals keep their frozen weights in fp32.

ACE-Step 1.5 (``acestep15`` = the 2B ``base``, ``acestep15_xl`` = the 4B ``xl-base``) is built from its package's
modules, not through a plugin (``bench_memory_acestep15.py``): LoRA r=64 alpha=128 as its users train it, rows
``lora``, ``lora_nockpt`` and ``lora_240s`` only.
"""
from __future__ import annotations

from typing import Any

from bench_common import SEED

GB = 1e9
PLUGINS = ("acestep", "valle", "songgen", "tortoise", "acestep15", "acestep15_xl")
ACESTEP15 = ("acestep15", "acestep15_xl")  # built from the package (bench_memory_acestep15.py), not a plugin
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
#: ACE-Step 1.5's rows (LoRA r=64 alpha=128, as its users train it)
ACESTEP15_TITLES = {"lora": "LoRA r=64 a=128, bf16, defaults (ckpt on, cached conditions, frozen base in bf16)",
                    "lora_nockpt": "LoRA r=64 a=128, bf16, no gradient checkpointing",
                    "lora_240s": "LoRA r=64 row at a 240 s song (6000 latent frames, the longest it takes)"}
ROW_PLUGINS = {"lora_240s": ("acestep", *ACESTEP15)}  # rows measured for some plugins only
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
RELEASE_DEPTH = {"acestep": 24, "valle": 12, "songgen": 24, "tortoise": 30, "acestep15": 24, "acestep15_xl": 32}
PRESET = {"acestep": "v1-3.5b", "valle": "full", "songgen": "mixed_pro", "tortoise": "release", "acestep15": "base",
          "acestep15_xl": "xl-base"}
CLIP = {"acestep": 60.0, "valle": 10.0, "songgen": 30.0, "tortoise": 11.609750566893424, "acestep15": 60.0,
        "acestep15_xl": 60.0}
CLIP_WHY = {"acestep": "60 s: a typical training excerpt (646 latent frames)",
            "valle": "10 s: a typical utterance (750 codec frames x 8, 4.5 s prompt)",
            "songgen": "30 s: its maximum (1500 frames x 8 codebooks)",
            "tortoise": "11.6 s: DLAS pads every clip to it (250 codes)",
            # a 60 s excerpt: what Side-Step's crop modes and the trainers' LoRA recipes cut songs to (the release
            # trains whole songs up to 240 s: the lora_240s row)
            "acestep15": "60 s: a typical training excerpt (1500 latent frames at 25 Hz)",
            "acestep15_xl": "60 s: a typical training excerpt (1500 latent frames at 25 Hz)"}
# fit whole: measured at release depth too, as a check of the extrapolation (SongGen without gradient
# checkpointing would not: ~1 GB of activations a block at 30 s)
# ACE-Step 1.5: at release depth too, the 60 s rows of the 2B (4-7 GB) and the XL's LoRA row (~10 GB); the 240 s
# rows whole take over 15 min on a shared 2-core machine (the 2B's timed out at 900 s): extrapolated only
FULL_CHECK = {"valle": ROWS[:5], "tortoise": ROWS[:5], "songgen": ("lora", "full_adamw", "full_8bit"),
              "acestep15": ("lora", "lora_nockpt"), "acestep15_xl": ("lora",)}


def has_row(plugin: str, row: str) -> bool:
    """Whether ``row`` exists for ``plugin``."""
    if plugin in ACESTEP15:
        return row in ACESTEP15_TITLES
    if row == "original" and plugin not in HAS_ORIGINAL:
        return False
    return plugin in ROW_PLUGINS.get(row, PLUGINS)


def title(plugin: str, row: str) -> str:
    return ACESTEP15_TITLES[row] if plugin in ACESTEP15 else ROW_TITLES[row]


def heavy(spec: dict[str, Any]) -> bool:
    """Measurements that need more than ~6 GB: at most one of them runs at a time (24 GiB machine)."""
    p, row, d = spec["plugin"], spec["row"], int(spec["depth"])
    return (p == "acestep" and row in ("full_adamw", "full_8bit", "original")) or (
        p in ("songgen", "tortoise") and d == RELEASE_DEPTH[p] and row != "lora") or (
        p in ACESTEP15 and d == RELEASE_DEPTH[p])


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

