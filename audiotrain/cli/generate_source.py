"""What ``audiotrain generate SOURCE`` generates with: SOURCE's plugin and config, its weights, the model built from
them with the adapter at ``--lora-scale``.

SOURCE is a run directory (its ``config.yaml`` names plugin and preset; the adapter is ``adapters/<step>``), an
adapter folder (``peft/`` or ``adapter_config.json``, whose ``base_model_name_or_path`` audiotrain writes as
``<plugin>:<preset>``; or a full fine-tune's ``model.safetensors`` inside a run's ``adapters/``) or a run
directory's merged weights (``audiotrain merge RUN_DIR --out RUN_DIR/merged``: read beside the run's config).
Every file is read as data (:mod:`audiotrain.safe_files`); a missing or damaged one is one sentence (a UserError).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audiotrain.errors import UserError

GIVE = "give a run directory (with config.yaml and adapters/), an adapter folder or merged weights"


@dataclass
class Source:
    path: Path
    cfg: Any                      # the composed config (OmegaConf)
    plugin: Any
    adapter: Path | None          # the adapter folder (None: the base model as the config builds it)
    describe: str = ""


@dataclass
class GenerationModel:
    """What a plugin's ``generate`` receives: the backbone (adapter attached and scaled) and its frozen encoders
    (lazy: each loads on first use, once for every prompt of the call)."""
    backbone: Any
    encoders: list
    lora_scale: float = 1.0
    extra: dict = field(default_factory=dict)  # the plugin's own cache across prompts of one call


def _compose_for(name: str, preset: str, where: str) -> Any:
    from audiotrain.config.compose import compose_checked
    from audiotrain.plugins import registry

    registry.register_configs()
    cfg, problems = compose_checked([f"model={name}", f"model.preset={preset}"] if preset else [f"model={name}"])
    if problems:
        raise UserError(f"{where} names the model {name}:{preset}, which does not compose here ({problems[0]}): "
                        f"{GIVE} of an installed plugin.")
    return cfg


def find_source(path: Path, step: str = "final") -> Source:
    """SOURCE → its plugin, config and adapter folder (one sentence when it is none of the three)."""
    from omegaconf import OmegaConf

    from audiotrain.atomic_write import recover
    from audiotrain.cli.adapters import _adapter_dir, _peft_dir, _run_config
    from audiotrain.config import resolvers
    from audiotrain.lora import adapter as lora
    from audiotrain.plugins import registry

    resolvers.register()
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"SOURCE {path} does not exist: {GIVE}.")
    if not path.is_dir():
        raise UserError(f"SOURCE {path} is a file, not a folder: {GIVE}.")
    recover(path / "adapters" / step)
    cfg = _run_config(path)
    adapter: Path | None = None
    if cfg is None and path.parent.name == "adapters":  # <run>/adapters/<step>: the run's config is two levels up
        cfg = _run_config(path.parent.parent)
    if cfg is None and (path.parent / "config.yaml").is_file() and not (path / "adapters").is_dir():
        cfg = _run_config(path.parent)  # <run>/merged (audiotrain merge --out inside the run directory)
    if cfg is not None and (path / "config.yaml").is_file():
        try:
            adapter = _adapter_dir(path, step)
        except FileNotFoundError as exc:
            raise UserError(str(exc)) from None
    elif cfg is not None or _peft_dir(path) is not None or (path / "model.safetensors").is_file():
        adapter = path
    if cfg is None:
        peft = _peft_dir(path)
        base = lora.peft_base_model(peft) if peft is not None else ""
        if ":" not in base:
            raise UserError(f"SOURCE {path} says neither which model it is for (no config.yaml beside it, no "
                            f"'<plugin>:<preset>' base model in an adapter_config.json): {GIVE}.")
        name, _, preset = base.partition(":")
        if name not in registry.discover():
            raise UserError(f"SOURCE {path} is an adapter of the model '{name}', whose plugin is not installed "
                            f"(installed: {', '.join(sorted(registry.discover()))}): install it or {GIVE}.")
        cfg = _compose_for(name, preset, str(path))
    OmegaConf.set_struct(cfg, False)
    plugin = registry.get(str(cfg.model.name))
    what = f"{plugin.name} ({cfg.model.get('preset')})"
    return Source(path, cfg, plugin, adapter, what + (f", adapter {adapter}" if adapter is not None else ""))


def _merged_file(adapter: Path) -> Path | None:
    """The weights file a merged/full folder holds: ``model.safetensors``, or one ``*.safetensors`` below it."""
    if (adapter / "model.safetensors").is_file():
        return adapter / "model.safetensors"
    found = sorted(p for p in adapter.rglob("*.safetensors") if "peft" not in p.parts)
    return found[0] if len(found) == 1 else None


def load_model(source: Source, lora_scale: float = 1.0, trust_pickle: bool = False) -> GenerationModel:
    """The backbone with SOURCE's adapter (LoRA scaled by ``lora_scale``: 0 is the base model) or its full/merged
    weights (blended ``base + lora_scale * (weights - base)``), in eval mode, and the plugin's encoders."""
    import torch

    from audiotrain.cli.adapters import _peft_dir
    from audiotrain.lora import adapter as lora
    from audiotrain.safe_files import load_safetensors

    cfg, plugin = source.cfg, source.plugin
    cfg.trust_pickle = bool(trust_pickle)  # never the run's own config.yaml: it may come from a stranger
    backbone = plugin.build_backbone(cfg)
    root = backbone.adapter_root()
    peft = _peft_dir(source.adapter) if source.adapter is not None else None
    if peft is not None:
        settings, state = lora.load_peft(peft)
        problem = lora.base_problem(str(peft), lora.peft_base_model(peft), str(cfg.model.name),
                                    cfg.model.get("preset", ""))
        if problem:
            raise UserError(problem)
        backbone.release_unused_weights(settings.target_modules)
        lora.attach(root, settings)
        lora.load_adapter_state(root, state, str(peft), f"{GIVE} of this model")
        scale_lora(root, float(lora_scale))
    elif source.adapter is not None:
        weights = _merged_file(source.adapter)
        if weights is None:
            raise UserError(f"SOURCE {source.adapter} holds no weights (no peft/ folder, adapter_config.json or one "
                            f"*.safetensors file): {GIVE}.")
        state = load_safetensors(weights, expected="a full fine-tune's or merged model's safetensors")
        base = root.state_dict()
        unknown = sorted(set(state) - set(base))
        if unknown or not state:
            raise UserError(f"{weights} holds {len(unknown)} weights this {source.describe} model lacks (first: "
                            f"{unknown[0] if unknown else 'none'}): {GIVE} of this model.")
        s = float(lora_scale)
        blended = {k: (base[k] + s * (v.to(base[k].dtype) - base[k]) if base[k].is_floating_point() and s != 1.0
                       else v) for k, v in state.items()}
        root.load_state_dict(blended, strict=False)
    backbone.eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    return GenerationModel(backbone, plugin.build_encoders(cfg), float(lora_scale))


def scale_lora(root: Any, scale: float) -> int:
    """Multiply every LoRA layer's scaling (alpha / r, or alpha / sqrt(r) with rsLoRA) by ``scale``; returns how
    many layers. 0 turns the adapter off exactly (the base model's outputs)."""
    count = 0
    for module in root.modules():
        scaling = getattr(module, "scaling", None)
        if isinstance(scaling, dict) and hasattr(module, "lora_A"):
            for name in scaling:
                scaling[name] = scaling[name] * scale
            count += 1
    return count
