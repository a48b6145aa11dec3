"""``model.init_from``: start a new run (step 0, fresh optimizer) from the final weights of an earlier one.

What it can name:
- a run directory: its ``adapters/final`` (written by run.py's adapter saver at the end of a run);
- an experiment's folder ``<paths.log_dir>/<exp_name>``: the newest of its runs that finished (so a stage preset
  can name the stage before it by its exp_name);
- an adapter folder: ``peft/`` (or a PEFT folder itself: adapter_config.json + adapter_model.safetensors) of a
  LoRA run, or ``model.safetensors`` of a full fine-tune;
- a weights file: ``.safetensors`` (adapter-root keys, or a PEFT adapter_model.safetensors), or a Lightning
  ``.ckpt`` (read with ``torch.load(weights_only=True)``; its ``state_dict`` only). Every file is read as data
  (:mod:`audiotrain.safe_files`): a crafted pickle is refused unless ``trust_pickle=true``.

The load is strict (:mod:`audiotrain.models.state_dict`): keys the model lacks or the source lacks and every
shape that differs are refused in one sentence (:class:`StateDictMismatch`). Across kinds: full weights into a
LoRA run become the base under a fresh (zero-effect) adapter; a PEFT adapter into a full fine-tune is merged
into the base weights. A LoRA-only ``.ckpt`` into a full fine-tune is refused (it lacks the LoRA settings):
give the run directory instead.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from audiotrain.atomic_write import recover
from audiotrain.errors import UserError
from audiotrain.lora import adapter as lora_adapter
from audiotrain.lora.adapter import PEFT_PREFIX, LoRASettings
from audiotrain.models.state_dict import StateDictMismatch, check_state_dict, compare


class InitFromError(UserError):
    """A ``model.init_from`` that cannot be found or read (weights that do not fit raise
    :class:`~audiotrain.models.state_dict.StateDictMismatch`)."""


@dataclass
class Source:
    """Weights read from ``model.init_from``: ``kind`` "full" (plain adapter-root keys) or "lora" (PEFT keys
    ``<module>.lora_A.weight``, with the settings when known)."""

    path: Path
    kind: str
    state: dict[str, torch.Tensor]
    settings: LoRASettings | None = None
    base_model: str = ""  # a PEFT folder's base_model_name_or_path (``<plugin>:<preset>`` when audiotrain wrote it)


def locate(value: Any) -> Path:
    """The file or folder to read for ``model.init_from=VALUE``; raises one sentence when there is none."""
    path = Path(str(value)).expanduser()
    for folder in (path, path / "adapters" / "final"):  # put back an adapter folder a killed save left aside
        recover(folder)
    if not path.exists():
        raise InitFromError(f"model.init_from={value} does not exist: give an earlier run's directory, its "
                            f"adapters/<name> folder, or a .safetensors / .ckpt weights file.")
    if path.is_file():
        if path.suffix not in (".safetensors", ".ckpt"):
            raise InitFromError(f"model.init_from={value} is a {path.suffix or 'suffix-less'} file: give a "
                                f".safetensors or Lightning .ckpt weights file (or an earlier run's directory).")
        return path
    for candidate in (path / "adapters" / "final", path):
        if (candidate / "peft" / "adapter_config.json").is_file() or (candidate / "model.safetensors").is_file() \
                or (candidate / "adapter_config.json").is_file():
            return candidate
    runs = sorted(path.glob("*/adapters/final"), key=lambda d: d.stat().st_mtime)
    if runs:  # an experiment's folder (<log_dir>/<exp_name>): its newest finished run
        return runs[-1]
    if (path / "adapters").is_dir():
        raise InitFromError(f"model.init_from={value} has no adapters/final (the run did not finish): give one "
                            f"of its saved adapter folders, e.g. {value}/adapters/<step folder>, or a checkpoint "
                            f"from {value}/checkpoints.")
    raise InitFromError(f"model.init_from={value} holds no weights: give an earlier run's directory (with "
                        f"adapters/final), an adapter folder (peft/ or model.safetensors) or a weights file.")


EXPECTED = ("an earlier run's directory (with adapters/final), an adapter folder (peft/ or model.safetensors), or a "
            ".safetensors / Lightning .ckpt weights file")


def read(value: Any, trust_pickle: bool = False) -> Source:
    """The weights ``model.init_from`` names, read as data (safetensors, or ``torch.load(weights_only=True)``
    unless ``trust_pickle``); a damaged, crafted or foreign file is one sentence."""
    from audiotrain.safe_files import load_safetensors

    path = locate(value)
    if path.is_dir():
        peft_dir = path / "peft" if (path / "peft" / "adapter_config.json").is_file() else path
        if (peft_dir / "adapter_config.json").is_file():
            settings, state = lora_adapter.load_peft(peft_dir, option="model.init_from")
            return Source(peft_dir, "lora", state, settings, lora_adapter.peft_base_model(peft_dir))
        path = path / "model.safetensors"
    if path.suffix == ".safetensors":
        if path.name == "adapter_model.safetensors" and (path.parent / "adapter_config.json").is_file():
            settings, state = lora_adapter.load_peft(path.parent, option="model.init_from")
            return Source(path.parent, "lora", state, settings, lora_adapter.peft_base_model(path.parent))
        state = load_safetensors(path, option="model.init_from", expected=EXPECTED)
        if state and all(k.startswith(PEFT_PREFIX) for k in state):
            raise InitFromError(f"model.init_from={value} is a PEFT adapter without its adapter_config.json beside "
                                f"it: give the adapter's folder.")
        if state and all(".lora_" in k for k in state):  # a bare LoRA file (e.g. a system's own LoRA format)
            return Source(path, "lora", state)
        return Source(path, "full", state)
    return _read_ckpt(path, value, trust_pickle)


def _read_ckpt(path: Path, value: Any, trust_pickle: bool = False) -> Source:
    from audiotrain.safe_files import load_torch

    ckpt = load_torch(path, option="model.init_from", trust_pickle=trust_pickle,
                      expected="a .ckpt from an earlier run's checkpoints/ folder (or its run directory)")
    state = ckpt.get("state_dict") if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping) or not state:
        raise InitFromError(f"model.init_from={value} is a PyTorch file but not a Lightning checkpoint (it has no "
                            f"state_dict): give a .ckpt from a run's checkpoints/ folder.")
    return Source(path, "ckpt", {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)})


def _root_prefix(backbone: nn.Module, root: nn.Module) -> str:
    for name, mod in backbone.named_modules():
        if mod is root:
            return f"{name}." if name else ""
    return ""


def _from_ckpt(src: Source, backbone: nn.Module, root: nn.Module) -> Source:
    """A TrainModule checkpoint's keys (``backbone.<root path>.<name>``) as adapter-root keys, live LoRA names
    (``.lora_A.default.weight``) as PEFT's (``.lora_A.weight``)."""
    prefix = "backbone." + _root_prefix(backbone, root)
    state = {k[len(prefix):]: v for k, v in src.state.items() if k.startswith(prefix)}
    if not state:
        raise InitFromError(f"model.init_from={src.path} holds no weights of this model's {prefix.rstrip('.')} "
                            f"(it is a checkpoint of another model).")
    if any("lora_" in k for k in state):
        lora = {k.replace(".default.", "."): v for k, v in state.items() if "lora_" in k}
        return Source(src.path, "lora", lora)
    return Source(src.path, "full", state)


def _released(root: nn.Module, key: str) -> bool:
    """True when ``key`` lies in a submodule the backbone released (set to None: never read by the forward)."""
    mod = root
    for part in key.split(".")[:-1]:
        if part in mod._modules and mod._modules[part] is None:
            return True
        nxt = mod._modules.get(part)
        if nxt is None:
            return False
        mod = nxt
    return False


def _base_name(key: str) -> str:
    """The name a full-weights file gives a LoRA-wrapped layer's base weight (``x.base_layer.weight`` -> ``x.weight``)."""
    parent, _, leaf = key.rpartition(".")
    return f"{parent.removesuffix('.base_layer')}.{leaf}" if parent.endswith(".base_layer") else key


def _copy(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    with torch.no_grad():
        for s, t in pairs:
            t.copy_(s.to(dtype=t.dtype, device=t.device))


def _load_lora(src: Source, root: nn.Module, run: LoRASettings | None = None) -> int:
    if run is not None:
        from audiotrain.lora.native_format import settings_from_shapes

        problem = lora_adapter.algo_problem(f"model.init_from={src.path}", src.settings, run) or \
            lora_adapter.rank_problem(f"model.init_from={src.path}", src.settings or settings_from_shapes(src.state),
                                      run)
        if problem:
            raise StateDictMismatch(problem)
    found = compare(lora_adapter.adapter_state(root), src.state)
    if found:
        fixes = []
        if found.missing or found.unexpected:
            before = f" ({', '.join(sorted(src.settings.target_modules))})" if src.settings else ""
            fixes.append(f"use the earlier run's lora.target_modules{before} here")
        if found.shapes:
            fixes.append("use the same model.preset and lora.r as the earlier run")
        raise StateDictMismatch(found.sentence(f"model.init_from={src.path}", "this run's LoRA adapter",
                                               " and ".join(fixes)))
    # the adapter's own parameters by PEFT's saved names: lora_A.default.weight -> lora_A.weight (LoRA),
    # lokr_w1.default -> lokr_w1 (LoKr)
    by_key = {re.sub(r"\.default(?=\.|$)", "", k): t for k, t in root.state_dict(keep_vars=True).items()}
    _copy([(v, by_key[k]) for k, v in src.state.items()])
    return len(src.state)


def _load_full(src: Source, root: nn.Module, lora_run: bool) -> int:
    """Full weights into the adapter root: in a LoRA run they become the wrapped layers' base weights; keys of
    submodules the backbone released are skipped."""
    expected = {(_base_name(k) if lora_run else k): t for k, t in root.state_dict(keep_vars=True).items()
                if "lora_" not in k}
    state = {k: v for k, v in src.state.items() if k in expected or not _released(root, k)}
    check_state_dict(expected, state, f"model.init_from={src.path}", "this run's model",
                     "it was saved from another model or preset; give weights of the same model.preset")
    _copy([(v, expected[k]) for k, v in state.items()])
    return len(state)


def _merge_lora(src: Source, root: nn.Module) -> int:
    """A LoRA adapter into a full fine-tune: attach it as trained, fold it into the base weights, remove it."""
    if src.settings is None:
        raise InitFromError(f"model.init_from={src.path} is a LoRA-only checkpoint and this run is a full fine-tune "
                            f"(lora=none): give the earlier run's directory (its adapters/final/peft holds the "
                            f"LoRA settings to merge), or keep LoRA on for this stage.")
    flags = {n: p.requires_grad for n, p in root.named_parameters()}
    lora_adapter.attach(root, src.settings)
    n = _load_lora(src, root)
    lora_adapter.merge(root)
    for name, p in root.named_parameters():
        p.requires_grad_(flags.get(name, True))
    return n


def load(value: Any, backbone: nn.Module, settings: LoRASettings | None,
         trust_pickle: bool = False, model: tuple[str, Any] | None = None) -> tuple[Source, int]:
    """Load ``model.init_from`` into the backbone's adapter root (after the adapter is attached). Returns the
    source read and how many tensors were loaded. ``trust_pickle`` (the DANGEROUS ``trust_pickle=true``)
    unpickles a ``.ckpt`` fully; ``model`` (this run's plugin name and preset) names an adapter of another model
    or preset as such."""
    root = backbone.adapter_root() if hasattr(backbone, "adapter_root") else backbone
    src = read(value, trust_pickle)
    if model is not None and src.base_model:
        problem = lora_adapter.base_problem(f"model.init_from={src.path}", src.base_model, *model)
        if problem:
            raise StateDictMismatch(problem)
    if src.kind == "ckpt":
        src = _from_ckpt(src, backbone, root)
    if src.kind == "lora":
        return src, (_load_lora(src, root, settings) if settings is not None else _merge_lora(src, root))
    if hasattr(backbone, "init_weights"):  # a stage of the system's recipe may drop parts on purpose (said)
        state, note = backbone.init_weights(src.state)
        if note:
            from audiotrain.train.console import console

            console.print(f"[yellow]Note:[/] model.init_from={src.path}: {note}", highlight=False)
        src = Source(src.path, src.kind, state, src.settings, src.base_model)
    return src, _load_full(src, root, lora_run=settings is not None)
