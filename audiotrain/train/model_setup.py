"""The model a job trains or evaluates: the plugin's backbone with its adapter (LoRA, or every weight trainable
for a full fine-tune), counted and described in one line, and how its trained weights are written."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from audiotrain.lora import adapter as lora_adapter
from audiotrain.lora.adapter import LoRASettings
from audiotrain.lora.from_config import settings_from_cfg
from audiotrain.models.backbone import Backbone
from audiotrain.train.console import console
from audiotrain.train.finite import check_finite
from audiotrain.train.trainable import TrainingPlan, apply_training_plan


@dataclass
class BuiltModel:
    backbone: Backbone
    settings: LoRASettings | None  # None: a full fine-tune
    trainable: int
    total: int
    released: int                  # parameters the forward pass never reads, not kept in memory
    plan: TrainingPlan             # model.init_from, model.freeze and the per-group counts (params.* in MLflow)
    quantised: int = 0             # base parameters held in 4-/8-bit (model.quantize)
    quantize: str = ""
    held_bf16: int = 0             # frozen base parameters held in bf16 (model.frozen_dtype)
    frozen_dtype: str = ""         # the model.frozen_dtype setting that decided it

    @property
    def adapter_only(self) -> bool:
        return self.settings is not None


def build_model(cfg: DictConfig, plugin: Any, *, report: bool = True) -> BuiltModel:
    """The backbone with its adapter attached (or all of ``adapter_root`` trainable when ``lora=none``), gradient
    checkpointing when asked, ``model.init_from`` / ``model.freeze`` applied, and the trainable/total counts (printed in one line with ``report``)."""
    backbone = plugin.build_backbone(cfg)
    root = backbone.adapter_root()
    settings = settings_from_cfg(cfg.lora, backbone.default_lora_targets)
    released = quantised = 0
    mode = cfg.model.get("quantize")
    if settings is not None:
        released = backbone.release_unused_weights(settings.target_modules)
        if mode:
            from audiotrain.lora.quantize import compute_dtype, quantize_base

            quantised = quantize_base(root, str(mode), compute_dtype(str(cfg.precision.name)))
        lora_adapter.attach(root, settings)
        if quantised:  # PEFT makes an NF4 layer's LoRA in its compute dtype: the optimizer keeps fp32 weights
            for p in root.parameters():
                if p.requires_grad and p.is_floating_point() and p.dtype != torch.float32:
                    p.data = p.data.float()
    else:
        for p in root.parameters():
            p.requires_grad_(True)
    if cfg.trainer.get("gradient_checkpointing") and hasattr(backbone, "enable_gradient_checkpointing"):
        backbone.enable_gradient_checkpointing()
    value = cfg.lora.get("init_from")
    if value and cfg.model.get("init_from"):
        from audiotrain.errors import UserError

        raise UserError(f"lora.init_from={value} and model.init_from={cfg.model.init_from} are both set: keep one "
                        f"(model.init_from for an earlier audiotrain run, lora.init_from for an adapter alone).")
    if value:
        from audiotrain.train.lora_init import load_adapter

        src, n, note = load_adapter(value, root, settings, plugin, trust_pickle=bool(cfg.get("trust_pickle", False)))
        if report:
            console.print(f"Adapter initialised from {src.path} ({n} tensors; a new run from step 0).")
            if note:
                console.print(f"[yellow]Note:[/] {note}", highlight=False)
    plan = apply_training_plan(backbone, cfg, settings, console if report else None)
    held = 0
    if settings is not None:  # once the trainable parameters are final: LoRA, init_from and freeze applied
        from audiotrain.lora.frozen_dtype import hold, resolve

        dtype = resolve(cfg)
        held = hold(backbone, dtype) if dtype is not None else 0
    trainable = sum(p.numel() for p in backbone.parameters() if p.requires_grad)
    total = sum(logical_numel(p) for p in backbone.parameters())
    built = BuiltModel(backbone, settings, trainable, total, released, plan, quantised, str(mode or ""), held,
                       str(cfg.model.get("frozen_dtype", "auto")))
    if report:
        console.print(describe(built, plugin.name, cfg.model.get("preset")))
        if quantised and _writes_whole_model(plugin):
            console.print(f"[yellow]Note:[/] with model.quantize={mode} the saves hold the adapter only; the whole-model "
                          f"file {plugin.name}'s tools load is written from the unquantised base by "
                          f"`audiotrain merge RUN_DIR`.", highlight=False)
    return built


def logical_numel(p) -> int:
    """A parameter's element count as the model defines it (a 4-bit weight packs two into a byte)."""
    state = getattr(p, "quant_state", None)
    shape = getattr(state, "shape", None)
    if shape is not None:
        n = 1
        for d in shape:
            n *= int(d)
        return n
    return p.numel()


def _writes_whole_model(plugin: Any) -> bool:
    from audiotrain.plugins.base import Plugin

    own = getattr(type(plugin), "save_weights_native", None)
    return own is not None and own is not Plugin.save_weights_native


def targets_line(targets: Any, most: int = 8) -> str:
    """The adapted modules for the model line: the names themselves when few, else how many layers of which kinds
    (``192 layers: cross_attn.k_proj, cross_attn.o_proj, ...`` rather than 192 full names)."""
    names = [str(t) for t in targets]
    kinds = sorted({".".join(n.split(".")[-2:]) for n in names})
    if len(names) <= most or len(kinds) == len(names):  # few, or patterns (to_q, linear_k ...) rather than layers
        return ", ".join(names)
    return f"{len(names)} layers: {', '.join(kinds)}"


def describe(m: BuiltModel, name: str, preset: Any) -> str:
    s = m.settings
    return (f"Model {name} ({preset}): {m.trainable:,} trainable of {m.total:,} parameters"
            + (f"; {'LoKr' if s.algo == 'lokr' else 'LoRA'} r={s.r} alpha={s.alpha:g} on {targets_line(s.target_modules)}"
               if s else "; full fine-tune")
            + (f" ({m.released:,} parameters the forward pass never reads are not kept in memory)" if m.released else "")
            + (f"; {m.quantised:,} base parameters held in {m.quantize} (model.quantize)" if m.quantised else "")
            + (f"; {m.held_bf16:,} frozen base parameters held in bf16 (model.frozen_dtype={m.frozen_dtype}"
               + (": a bf16-mixed LoRA run, whose autocast computes them in bf16 anyway" if m.frozen_dtype == "auto" else "")
               + ")" if m.held_bf16 else ""))


def adapter_writer(m: BuiltModel, plugin: Any, cfg: DictConfig):
    """``save(out_dir)``: the adapter in PEFT format and the plugin's native one (a full fine-tune: every weight
    of ``adapter_root`` as ``model.safetensors``), gathered first when ZeRO-3 partitions the weights. The folder
    is written beside ``out_dir`` and renamed into place when complete (``atomic_dir``): a kill or a full disk
    leaves the previous folder of that name, and the other adapters, as they were."""
    root = m.backbone.adapter_root()
    base = f"{plugin.name}:{cfg.model.get('preset')}"

    def save(out: Path, step: int = 0) -> None:
        from audiotrain.atomic_write import atomic_dir
        from audiotrain.train.deepspeed_cpu import gathered

        with gathered(root), atomic_dir(out, kept=lambda: kept_adapter(out), fix=ADAPTER_DISK_FULL_FIX) as tmp:
            # nothing with NaN/Inf values is ever written (a diverged run keeps its last good adapter); a refusal
            # leaves the previous folder as it was
            check_finite(root.state_dict() if m.settings is None else
                         {n: p for n, p in root.named_parameters() if p.requires_grad}, f"the adapter {out}")
            if m.settings is None:
                from safetensors.torch import save_file

                from audiotrain.models.state_dict import savable

                save_file(savable(root.state_dict()), str(tmp / "model.safetensors"))
            else:
                lora_adapter.save_peft(root, m.settings, tmp / "peft", base_model=base)
                plugin.save_adapter_native(root, m.settings, tmp / plugin.name)
            native = getattr(plugin, "save_weights_native", None)  # a Plugin has it; a duck-typed one may not
            if native is not None and not m.quantised:  # a quantised base is not the model's weights: merge does it
                from audiotrain.lora.frozen_dtype import held_in_fp32

                with held_in_fp32(root):  # a whole-model file is fp32, whatever the run held its frozen base in
                    native(root, m.settings, tmp, int(step))

    return save


ADAPTER_DISK_FULL_FIX = ("free some space, or set paths.log_dir= to a disk with room or a larger "
                         "trainer.every_n_train_steps= (fewer adapters and checkpoints), then resume with resume=auto")


def kept_adapter(out: Path) -> str:
    """What a failed save of the adapter folder ``out`` leaves: that folder as it was, or the newest other one."""
    from audiotrain.train.run_dir import saved_adapters

    if out.is_dir():
        return f"the previous adapter {out} is kept"
    others = saved_adapters(out.parent.parent) if out.parent.name == "adapters" else []
    return f"the previous adapter {others[-1]} is kept" if others else "no earlier adapter was written"
