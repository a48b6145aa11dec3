"""ACE-Step 1.5's rows of ``make bench-memory``: one LoRA training step of the 2B ``base`` and the 4B ``xl-base``
DiT, built from the package's own modules (``audiotrain_acestep15``; no plugin class needed), at release widths.

The set-up is the one its users train (/work/shared/specs/acestep15.md §2b, §3, §4a) with audiotrain's defaults:

- LoRA r=64, alpha=128, dropout 0.1 (PEFT, through the core's ``audiotrain.lora.adapter.attach``) on ``q_proj``,
  ``k_proj``, ``v_proj``, ``o_proj`` of the decoder's self- and cross-attention, every decoder layer: 688,128·r
  trainable parameters for the 2B, 1,310,720·r for the XL (asserted, per layer at a reduced depth);
- the frozen base in bf16 (``audiotrain.lora.frozen_dtype.hold``, what ``model.frozen_dtype=auto`` does at
  ``bf16-mixed``); the step under ``torch.autocast("cpu", bfloat16)``;
- cached conditions, as ACE-Step 1.5's preprocessed ``.pt`` files hold them: ``encoder_hidden_states``
  ``[1, 769, 2048]`` (512 lyric + 1 timbre + 256 text tokens; every position valid, the upper bound), the
  ``context_latents`` ``[1, T, 128]`` (source latents ‖ chunk mask) and ``target_latents`` ``[1, T, 64]`` at
  25 latent frames/s. The condition encoder, the FSQ tokenizer and detokenizer are never read by such a step:
  they stay on the meta device (released, as the framework releases what the forward pass never reads);
- the objective ``flow_matching_loss`` (logit-normal t, CFG dropout 0.15, velocity MSE), gradient clipping at
  1.0, fp32 AdamW (lr 1e-4; on CUDA audiotrain defaults to AdamW8bit, whose state is ~1/4 of this one's);
- gradient checkpointing from ``set_gradient_checkpointing`` (the ``lora`` and ``lora_240s`` rows) or off
  (``lora_nockpt``).

The model is built one decoder layer at a time (each layer at fp32 with its seeded random init, LoRA attached, its
frozen matrices held in bf16 before the next is built), so the build never holds the whole model in fp32: the load
peak is what loading a released bf16 folder into a bf16-held model needs, about the bf16 weights.
"""
from __future__ import annotations

import time
from typing import Any

from bench_common import SEED
from bench_memory_rows import CLIP, RELEASE_DEPTH, ROW_CLIP

#: system -> the package's preset
SYSTEMS = {"acestep15": "base", "acestep15_xl": "xl-base"}
LORA_R, LORA_ALPHA, LORA_DROPOUT = 64, 128.0, 0.1
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")  # PEFT suffixes: self_attn and cross_attn of every layer
#: trainable LoRA parameters per unit of r with every decoder layer (spec §4a)
TRAINABLE_PER_R = {"acestep15": 688_128, "acestep15_xl": 1_310_720}
FRAMES_PER_S = 25
ENCODER_TOKENS = 769  # 512 lyric + 1 timbre + 256 text


def import_modules() -> None:
    """Everything a measurement imports, before the heap baseline is read."""
    import audiotrain.lora.adapter  # noqa: F401
    import audiotrain.lora.frozen_dtype  # noqa: F401
    import audiotrain_acestep15.dit  # noqa: F401
    import audiotrain_acestep15.objective  # noqa: F401


def build(system: str, depth: int, checkpointing: bool, random_init: bool = True):
    """The DiT of ``system`` with ``depth`` decoder layers (the release widths), LoRA on, frozen base in bf16.
    Returns ``(model, released parameter count)``. ``random_init=False`` allocates the frozen weights without
    initialising them (for checks of the layout, dtypes and counts only: their values are garbage)."""
    import dataclasses

    import torch
    from torch import nn

    from audiotrain.lora import frozen_dtype
    from audiotrain.lora.adapter import LoRASettings, attach
    from audiotrain_acestep15.dit import build_dit
    from audiotrain_acestep15.dit_config import preset_config
    from audiotrain_acestep15.dit_decoder import AceStepDiTModel
    from audiotrain_acestep15.dit_layers import AceStepDiTLayer

    config = preset_config(SYSTEMS[system], num_hidden_layers=depth)
    torch.manual_seed(SEED)
    with torch.device("meta"):  # the layout; what the step reads is built below, the rest stays released
        model = build_dit(config)
    model.requires_grad_(False)
    released = sum(p.numel() for name in ("encoder", "tokenizer", "detokenizer")
                   for p in getattr(model, name).parameters())
    model.null_condition_emb = nn.Parameter(torch.randn(1, 1, config.enc_hidden), requires_grad=False)
    def new(make):
        if random_init:
            return make()
        with torch.device("meta"):
            return make().to_empty(device="cpu")

    decoder = new(lambda: AceStepDiTModel(dataclasses.replace(config, num_hidden_layers=0, layer_types=None)))
    decoder.config = config
    settings = LoRASettings(r=LORA_R, alpha=LORA_ALPHA, dropout=LORA_DROPOUT, target_modules=list(TARGETS))
    decoder.requires_grad_(False)
    for i in range(depth):
        layer = new(lambda: AceStepDiTLayer(config, i))
        attach(layer, settings)  # freezes the layer, LoRA trainable
        frozen_dtype.hold(layer)
        decoder.layers.append(layer)
    frozen_dtype.hold(decoder)  # proj_in / proj_out / condition_embedder / time embeddings
    model.decoder = decoder
    model.set_gradient_checkpointing(checkpointing)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    expected = TRAINABLE_PER_R[system] * LORA_R * depth // RELEASE_DEPTH[system]  # the same in every layer
    if trainable != expected:
        raise AssertionError(f"{system} at depth {depth}: {trainable:,} trainable LoRA parameters, the spec's "
                             f"{TRAINABLE_PER_R[system]:,}·r gives {expected:,}")
    return model, released


def batch(seconds: float, enc_hidden: int, g: Any) -> dict[str, Any]:
    """One song's cached conditions and latents (random values, the preprocessed file's shapes), batch 1."""
    import torch

    from audiotrain_acestep15.dit import AceStepConditionGenerationModel

    frames = round(seconds * FRAMES_PER_S)
    src = 0.1 * torch.randn(1, frames, 64, generator=g)  # the silence latent's place (text-to-music)
    return {"target_latents": torch.randn(1, frames, 64, generator=g),
            "encoder_hidden_states": torch.randn(1, ENCODER_TOKENS, enc_hidden, generator=g),
            "encoder_attention_mask": torch.ones(1, ENCODER_TOKENS),
            "context_latents": AceStepConditionGenerationModel.context_latents(src)}


def step(spec: dict[str, Any], heap: Any) -> dict[str, Any]:
    """One measurement (see ``bench_memory_child.child_main``, which reads the result)."""
    import torch

    from audiotrain_acestep15.objective import flow_matching_loss

    system, row, depth = spec["plugin"], spec["row"], int(spec["depth"])
    model, released = build(system, depth, checkpointing=row != "lora_nockpt")
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4)
    heap_built = heap.current()
    t_built = time.perf_counter()
    phases = {"build": heap.peak()}
    heap.reset()
    g = torch.Generator().manual_seed(SEED)
    b = batch(ROW_CLIP.get(row, CLIP[system]), model.config.enc_hidden, g)
    t_encoded = time.perf_counter()
    phases["encode"] = heap.peak()
    heap.reset()
    gen = torch.Generator().manual_seed(SEED)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = flow_matching_loss(model, b["target_latents"], b["encoder_hidden_states"], b["context_latents"],
                                  None, b["encoder_attention_mask"], generator=gen)["loss"]
    loss.backward()
    grad_bytes = sum(p.grad.numel() * p.grad.element_size() for p in trainable if p.grad is not None)
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    t_step = time.perf_counter()
    phases["step"] = heap.peak()
    held = sum(p.numel() for p in model.parameters() if p.dtype == torch.bfloat16)
    return {"model": model, "opt": opt, "phases": phases, "preset": SYSTEMS[system], "loss": float(loss.detach()),
            "heap_built": heap_built, "grad_bytes": grad_bytes, "t_built": t_built, "t_encoded": t_encoded,
            "t_step": t_step, "extra": {"released": released, "encoders": {}, "held_bf16": held, "quantised": 0,
                                        "frames": int(b["target_latents"].shape[1])}}
