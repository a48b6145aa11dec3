"""Validate the composed config before any model is built; every problem comes back at once."""
from __future__ import annotations

import difflib
import os
import warnings
from pathlib import Path
from typing import Any, Iterable

from omegaconf import DictConfig, OmegaConf

from audiotrain.errors import UserError

from audiotrain.train.optim import OPTIMIZERS, SCHEDULERS

PRECISIONS = {"32": "32-true", "32-true": "32-true", "bf16-mixed": "bf16-mixed", "16-mixed": "16-mixed",
              "bf16-true": "bf16-true"}
BACKENDS = ("local", "ddp", "deepspeed")
MODES = ("train", "eval", "plan")


class ConfigError(UserError):
    """All config problems, one sentence each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("The configuration has {} problem{}:\n{}".format(
            len(problems), "" if len(problems) == 1 else "s", "\n".join(f"  - {p}" for p in problems)))


def nearest(key: str, candidates: Iterable[str]) -> str | None:
    m = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.5)
    return m[0] if m else None


def all_keys(cfg: Any, prefix: str = "") -> list[str]:
    out = []
    if isinstance(cfg, DictConfig):
        for k in cfg.keys():
            key = f"{prefix}{k}"
            out.append(key)
            v = cfg._get_node(k)
            if isinstance(v, DictConfig):
                out.extend(all_keys(v, key + "."))
    return out


def _num(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None)


def validate(cfg: DictConfig, plugin: Any | None, module_names: list[str] | None = None,
             need_data: bool = True) -> None:
    """Raise :class:`ConfigError` listing every problem found."""
    p: list[str] = []
    if need_data:
        data = cfg.get("data")
        if not data:
            p.append("No data given: add data=PATH (a folder of songs or a dataset saved to disk).")
        elif not Path(str(data)).expanduser().exists():
            p.append(f"data={data} does not exist: give the path of your data folder or dataset.")
    lora = cfg.lora
    if lora.get("enabled", True) and not lora.get("config_path"):
        r = lora.get("r")
        if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
            p.append(f"lora.r={r} is not a positive integer: use e.g. lora.r=16 (or lora=none for a full fine-tune).")
        a = lora.get("alpha")
        if not isinstance(a, (int, float)) or isinstance(a, bool) or a <= 0:
            p.append(f"lora.alpha={a} must be a positive number, e.g. lora.alpha=32.")
        d = lora.get("dropout")
        if not isinstance(d, (int, float)) or not 0.0 <= float(d) < 1.0:
            p.append(f"lora.dropout={d} must be in [0, 1).")
    if lora.get("config_path") and not Path(str(lora.config_path)).expanduser().is_file():
        p.append(f"lora.config_path={lora.config_path} does not exist: give the path of a lora_config.json.")
    if lora.get("enabled", True) and lora.get("target_modules") and module_names is not None:
        from audiotrain.lora.adapter import check_targets, unknown_targets_message

        missing = check_targets(module_names, list(lora.target_modules))
        if missing:
            p.append(unknown_targets_message(missing, module_names))
    prec = str(cfg.precision.get("name"))
    if prec not in PRECISIONS:
        p.append(f"precision={prec} is unknown: use one of 32, bf16-mixed, 16-mixed.")
    if cfg.optimizer.get("name") not in OPTIMIZERS:
        p.append(f"optimizer={cfg.optimizer.get('name')} is unknown: use one of {', '.join(OPTIMIZERS)}.")
    lr = cfg.optimizer.get("lr")
    if not isinstance(lr, (int, float)) or lr <= 0:
        p.append(f"optimizer.lr={lr} must be a positive number, e.g. optimizer.lr=1e-4.")
    if cfg.scheduler.get("name") not in SCHEDULERS:
        p.append(f"scheduler={cfg.scheduler.get('name')} is unknown: use one of {', '.join(SCHEDULERS)}.")
    if cfg.backend.get("name") not in BACKENDS:
        p.append(f"backend={cfg.backend.get('name')} is unknown: use one of {', '.join(BACKENDS)}.")
    tr = cfg.trainer
    epochs = tr.get("max_epochs")
    by_epochs = isinstance(epochs, int) and not isinstance(epochs, bool) and epochs >= 1
    for key in ("max_steps", "accumulate_grad_batches", "devices", "num_nodes"):
        v = tr.get(key)
        if key == "max_steps" and v == -1 and by_epochs:
            continue  # the length is given in epochs (trainer.max_epochs)
        if not isinstance(v, int) or v < 1:
            p.append(f"trainer.{key}={v} must be a positive integer"
                     + (" (or -1 with trainer.max_epochs=N to train for N epochs)." if key == "max_steps" else "."))
    bad_steps = tr.get("max_nonfinite_steps", 10)
    if not isinstance(bad_steps, int) or isinstance(bad_steps, bool) or bad_steps < 1:
        p.append(f"trainer.max_nonfinite_steps={bad_steps} must be a positive integer (the NaN/Inf steps in a row "
                 f"that stop a run), e.g. 10.")
    for key in ("every_n_train_steps", "every_plot_step", "keep_last_n", "keep_last_adapters"):
        v = tr.get(key)
        if not isinstance(v, int) or v < 0:
            p.append(f"trainer.{key}={v} must be a non-negative integer (0 turns it off).")
    if tr.get("profiler") not in (None, "simple", "advanced"):
        p.append(f"trainer.profiler={tr.get('profiler')} is unknown: use simple or advanced (or null for none).")
    if not isinstance(tr.get("signal_handlers"), bool):
        p.append(f"trainer.signal_handlers={tr.get('signal_handlers')} must be true or false.")
    if tr.get("gradient_clip_algorithm") not in ("norm", "value"):
        p.append(f"trainer.gradient_clip_algorithm={tr.get('gradient_clip_algorithm')} must be norm or value.")
    bs = cfg.dataset.get("batch_size")
    if not isinstance(bs, int) or bs < 1:
        p.append(f"dataset.batch_size={bs} must be a positive integer.")
    if cfg.get("mode", "train") not in MODES:
        p.append(f"mode={cfg.get('mode')} is unknown: use train, eval or plan.")
    order = cfg.dataset.get("order")
    if order not in (None, "interleaved", "duration", "speaker", "random"):
        p.append(f"dataset.order={order} is unknown: use interleaved, duration, speaker or random (or null).")
    from audiotrain.data.prepare_pool import resolve_workers
    from audiotrain.errors import UserError

    try:
        resolve_workers(cfg.dataset.get("prepare_workers", "auto"))
    except UserError as exc:
        p.append(str(exc))
    mbs = cfg.dataset.get("max_batch_seconds")
    if mbs is not None and (not isinstance(mbs, (int, float)) or mbs <= 0):
        p.append(f"dataset.max_batch_seconds={mbs} must be a positive number of seconds (or null).")
    if cfg.get("resume") not in (None, "auto"):
        p.append(f"resume={cfg.get('resume')} must be auto (or leave it unset and use ckpt_path=FILE).")
    if cfg.get("ckpt_path") and not _is_checkpoint(Path(str(cfg.ckpt_path))):
        what = "is a folder, not a checkpoint file" if Path(str(cfg.ckpt_path)).is_dir() else "does not exist"
        p.append(f"ckpt_path={cfg.ckpt_path} {what}: give a .ckpt file from a run's checkpoints/ folder.")
    uri = cfg.tracking.get("uri")
    if cfg.tracking.get("name") == "mlflow":
        if not uri or not str(uri).startswith(("sqlite:///", "http://", "https://", "postgresql", "mysql")):
            p.append(f"tracking.uri={uri} is not a store MLflow 3 accepts: use sqlite:///path/mlflow.db or an http:// server.")
    p.extend(deepspeed_problems(cfg))
    p.extend(training_plan_problems(cfg, plugin))
    from audiotrain.train.val_split import config_problems as validation_problems

    p.extend(validation_problems(cfg))
    for msg in deepspeed_advisories(cfg):
        warnings.warn(msg, UserWarning, stacklevel=1)  # one location: said once though validate runs twice
    if plugin is not None:
        p.extend(plugin.validate(cfg))
    if p:
        raise ConfigError(p)


def training_plan_problems(cfg: DictConfig, plugin: Any | None) -> list[str]:
    """``model.freeze``, ``model.init_from`` and ``optimizer.groups``, checked before any data is read (a freeze
    pattern against the names of the model built on the meta device, LoRA layers included)."""
    from audiotrain.train.param_groups import GROUP_KEYS

    p: list[str] = []
    patterns = OmegaConf.select(cfg, "model.freeze", default=None)
    if patterns is not None and not (OmegaConf.is_list(patterns) and all(isinstance(x, str) and x for x in patterns)):
        p.append(f"model.freeze={patterns} must be a list of name patterns, e.g. model.freeze=[lyric_encoder] "
                 f"(or [] to freeze nothing).")
        patterns = None
    value = OmegaConf.select(cfg, "model.init_from", default=None)
    if value:
        from audiotrain.train.init_from import InitFromError, locate

        try:
            locate(value)
        except InitFromError as exc:
            p.append(str(exc))
    mode = OmegaConf.select(cfg, "model.quantize", default=None)
    if mode is not None:
        from audiotrain.lora.quantize import check as quantize_problem

        problem = quantize_problem(mode, bool(OmegaConf.select(cfg, "lora.enabled", default=True)))
        if problem:
            p.append(problem)
    from audiotrain.lora.frozen_dtype import check as frozen_dtype_problem

    problem = frozen_dtype_problem(OmegaConf.select(cfg, "model.frozen_dtype", default="auto"),
                                   bool(OmegaConf.select(cfg, "lora.enabled", default=True)),
                                   str(OmegaConf.select(cfg, "precision.name", default="32")),
                                   str(OmegaConf.select(cfg, "backend.name", default="local")))
    if problem:
        p.append(problem)
    adapter = OmegaConf.select(cfg, "lora.init_from", default=None)
    if adapter and not Path(str(adapter)).expanduser().exists():
        p.append(f"lora.init_from={adapter} does not exist: give a PEFT adapter folder, the model's own adapter "
                 f"file (e.g. pytorch_lora_weights.safetensors, lora.sft) or an earlier run's directory.")
    groups = OmegaConf.select(cfg, "optimizer.groups", default=None) or {}
    for name, entry in (groups.items() if OmegaConf.is_dict(groups) else []):
        if not OmegaConf.is_dict(entry):
            p.append(f"optimizer.groups.{name}={entry} must hold lr_mult / weight_decay / match, e.g. "
                     f"+optimizer.groups.{name}.lr_mult=0.1.")
            continue
        for key in entry:
            if key not in GROUP_KEYS:
                guess = nearest(str(key), GROUP_KEYS)
                p.append(f"optimizer.groups.{name}.{key} is unknown: use {', '.join(GROUP_KEYS)}"
                         + (f" (did you mean {guess}?)." if guess else "."))
        mult = entry.get("lr_mult", 1.0)
        if not isinstance(mult, (int, float)) or isinstance(mult, bool) or mult < 0:
            p.append(f"optimizer.groups.{name}.lr_mult={mult} must be a non-negative number (1 = the base lr).")
        wd = entry.get("weight_decay")
        if wd is not None and (not isinstance(wd, (int, float)) or isinstance(wd, bool) or wd < 0):
            p.append(f"optimizer.groups.{name}.weight_decay={wd} must be a non-negative number (or null for "
                     f"optimizer.weight_decay).")
        match = entry.get("match")
        if match is not None and not (OmegaConf.is_list(match) and match and all(isinstance(m, str) for m in match)):
            p.append(f"optimizer.groups.{name}.match={match} must be a list of name patterns, e.g. [text_embedding*].")
    if groups and not OmegaConf.is_dict(groups):
        p.append(f"optimizer.groups={groups} must map group names to settings, e.g. +optimizer.groups.no_decay.lr_mult=1.")
    if patterns and plugin is not None:
        names = _names_for_freeze(cfg, plugin)
        if names:
            from audiotrain.train.freeze import check

            problem = check([str(x) for x in patterns], names)
            if problem:
                p.append(problem)
    return p


def _names_for_freeze(cfg: DictConfig, plugin: Any) -> list[str]:
    """Module and parameter names of the adapter root, plus the LoRA layers' names; [] when the model cannot be
    built on the meta device (the check then happens when the real model is built)."""
    import torch

    from audiotrain.lora.from_config import settings_from_cfg
    from audiotrain.train.freeze import lora_names, names_of

    try:
        with torch.device("meta"):
            backbone = plugin.build_backbone(cfg, device="meta")
        settings = settings_from_cfg(cfg.lora, backbone.default_lora_targets)
    except Exception:  # a bad preset or LoRA setting is reported by its own check, in its own words
        return []
    root = backbone.adapter_root()
    names = names_of(root)
    if settings is not None:
        names += lora_names([n for n, _ in root.named_modules()], settings.target_modules, settings.algo)
    return names


def _is_checkpoint(path: Path) -> bool:
    """A Lightning .ckpt file, or the .ckpt folder DeepSpeed writes (it holds a ``latest`` tag file)."""
    return path.is_file() or (path.is_dir() and (path / "latest").is_file())


def _on_cpu(cfg: DictConfig) -> bool:
    acc = str(OmegaConf.select(cfg, "trainer.accelerator", default="auto"))
    return acc == "cpu" or (acc == "auto" and cpu_only())


def deepspeed_problems(cfg: DictConfig) -> list[str]:
    """Combinations DeepSpeed cannot run, refused before any model is built."""
    if OmegaConf.select(cfg, "backend.name") != "deepspeed":
        return []
    p: list[str] = []
    stage = OmegaConf.select(cfg, "backend.stage", default=2)
    if not isinstance(stage, int) or isinstance(stage, bool) or not 0 <= stage <= 3:
        p.append(f"backend.stage={stage} must be a ZeRO stage 0, 1, 2 or 3.")
    if OmegaConf.select(cfg, "optimizer.name") == "adamw8bit":
        p.append("optimizer=adamw8bit cannot run under backend=deepspeed: DeepSpeed partitions and wraps the "
                 "optimizer state, which bitsandbytes' 8-bit optimizers do not support; use optimizer=adamw "
                 "(or backend=local / ddp to keep the 8-bit optimizer).")
    if OmegaConf.select(cfg, "model.quantize", default=None):
        p.append(f"model.quantize={OmegaConf.select(cfg, 'model.quantize')} cannot run under backend=deepspeed: ZeRO "
                 f"partitions the weights, which bitsandbytes' quantised layers hold in their own format; use "
                 f"backend=local or ddp with it.")
    if OmegaConf.select(cfg, "backend.offload_parameters") and stage != 3:
        p.append(f"backend.offload_parameters=true needs backend.stage=3 (ZeRO offloads parameters only at "
                 f"stage 3; stage is {stage}).")
    if str(OmegaConf.select(cfg, "precision.name")) == "16-mixed" and _on_cpu(cfg):
        p.append("precision=16-mixed with backend=deepspeed on a CPU cannot train: DeepSpeed's fp16 optimizer "
                 "sees every CPU step as an overflow and stops at its minimum loss scale; use "
                 "precision=bf16-mixed or precision=32.")
    return p


def deepspeed_advisories(cfg: DictConfig) -> list[str]:
    """Combinations that run, with a cost worth saying once."""
    if OmegaConf.select(cfg, "backend.name") != "deepspeed":
        return []
    out: list[str] = []
    lora = cfg.get("lora")
    if OmegaConf.select(cfg, "backend.stage") == 3 and lora is not None and lora.get("enabled", True):
        out.append("backend=deepspeed with ZeRO stage 3 and LoRA: parameters are partitioned, so every adapter "
                   "and checkpoint save first gathers the full weights on each process (slower saves, "
                   "full-size memory for the moment of saving).")
    return out


def lightning_precision(name: str) -> str:
    return PRECISIONS[str(name)]


def cpu_only() -> bool:
    import torch

    return not torch.cuda.is_available() or os.environ.get("CUDA_VISIBLE_DEVICES") == ""
