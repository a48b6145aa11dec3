"""An adapter trained elsewhere as SOURCE of ``audiotrain export`` and ``audiotrain merge``: the inputs
``lora.init_from`` takes besides a run directory — a PEFT folder (or its ``adapter_model.safetensors``), the
plugin's own adapter file (ACE-Step's ``pytorch_lora_weights.safetensors`` from its trainer or from audiotrain,
with or without metadata; VALL-E's ``lora.sft`` / ``lora.pth``) or a folder holding one.

Which model it is for comes from ``model=NAME`` on the command line, else the PEFT folder's
``base_model_name_or_path`` (``<plugin>:<preset>``, as audiotrain writes it), else the file's name (each plugin's
native file name); the preset from ``model.preset=``, else that base model, else the plugin's default. Every file
is read as data (:func:`audiotrain.train.lora_init.read_adapter`). A file without a LoRA config gets its rank from
the tensors' shapes and its alpha from ``--alpha`` (default: alpha = r, scale 1 — how ACE-Step's pipeline plays
such a file). The adapter is checked against the model built on the meta device (no weights loaded), so a file of
another model or preset is one sentence before anything is written.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from audiotrain.errors import UserError

GIVE = ("give a run directory, a PEFT adapter folder, or the model's own adapter file (ACE-Step "
        "pytorch_lora_weights.safetensors, VALL-E lora.sft)")


@dataclass
class ExternalAdapter:
    path: Path        # the file or folder read
    plugin: Any
    cfg: Any          # model=<plugin> composed with the command line's overrides (OmegaConf, not struct)
    settings: Any     # LoRASettings: the file's, or rank from the shapes and alpha from --alpha
    state: dict       # PEFT-keyed tensors (``adapter_state``'s keys), scale folded in by a native file undone
    bare: bool        # the file carried no LoRA config

    @property
    def base_model(self) -> str:
        return f"{self.plugin.name}:{self.cfg.model.get('preset', '')}"


def is_external(source: Path) -> bool:
    """True for SOURCE that is not an audiotrain run directory or a run's own adapter folder (those keep their
    config beside them): a file, or a folder with no ``config.yaml`` here, one level up or two (``adapters/<step>``)."""
    source = Path(source).expanduser()
    if source.is_file():
        return True
    if not source.is_dir():
        return False
    if (source / "config.yaml").is_file() or (source.parent / "config.yaml").is_file():
        return False
    if source.parent.name == "adapters" and (source.parent.parent / "config.yaml").is_file():
        return False
    if (source / "model.safetensors").is_file():
        return False  # a full fine-tune's folder: copied as it is
    return True


def _option(overrides: Sequence[str], key: str) -> str | None:
    for item in overrides:
        name, sep, value = item.partition("=")
        if sep and name.lstrip("+~") == key:
            return value
    return None


def _native_files(plugins: dict) -> dict[str, str]:
    """native adapter file name → plugin name, for the installed plugins."""
    names: dict[str, str] = {}
    for name, plugin in plugins.items():
        fmt = plugin.native_adapter_format()
        if fmt is not None:
            names[fmt.filename] = name
    return names


def _which_model(source: Path, overrides: Sequence[str], command: str) -> tuple[str, str | None]:
    """(plugin name, preset or None) SOURCE is for."""
    from audiotrain.cli.adapters import _peft_dir
    from audiotrain.lora import adapter as lora
    from audiotrain.plugins import registry

    installed = registry.discover()
    preset = _option(overrides, "model.preset")
    name = _option(overrides, "model")
    folder = source if source.is_dir() else source.parent if source.name == "adapter_model.safetensors" else None
    peft = _peft_dir(folder) if folder is not None else None
    base = lora.peft_base_model(peft) if peft is not None else ""
    if ":" in base:
        found, _, found_preset = base.partition(":")
        if name is None:
            name = found
        if preset is None and found == name:
            preset = found_preset or None
    if name is None:
        natives = _native_files(installed)
        files = [source] if source.is_file() else [p for p in source.rglob("*") if p.is_file()]
        for file in files:
            hit = natives.get(file.name) or next((n for f, n in natives.items() if Path(f).stem == file.stem
                                                  and file.suffix in (".sft", ".safetensors", ".pth", ".pt")), None)
            if hit:
                name = hit
                break
    if name is None:
        raise UserError(f"{command}: {source} says not which model it is for (no '<plugin>:<preset>' base model in an "
                        f"adapter_config.json, no file named like a model's own adapter): add model=NAME (installed: "
                        f"{', '.join(sorted(installed))}).")
    if name not in installed:
        raise UserError(f"{command}: {source} is for the model '{name}', whose plugin is not installed (installed: "
                        f"{', '.join(sorted(installed))}): install it or give model=NAME of an installed one.")
    return name, preset


def compose_for(name: str, preset: str | None, overrides: Sequence[str], command: str) -> Any:
    from omegaconf import OmegaConf

    from audiotrain.config import resolvers
    from audiotrain.config.compose import compose_checked
    from audiotrain.plugins import registry

    resolvers.register()
    registry.register_configs()
    rest = [o for o in overrides if o.partition("=")[0].lstrip("+~") not in ("model", "model.preset")]
    cfg, problems = compose_checked([f"model={name}", *([f"model.preset={preset}"] if preset else []), *rest])
    if problems:
        raise UserError(f"{command}: {problems[0]}")
    OmegaConf.set_struct(cfg, False)
    return cfg


def _mismatch(plugin: Any, cfg: Any, settings: Any, state: dict) -> Any:
    """How ``state`` differs from the LoRA ``settings`` makes on the model ``cfg`` builds on the meta device."""
    import torch

    from audiotrain.lora import adapter as lora
    from audiotrain.models.state_dict import compare

    with torch.device("meta"):
        backbone = plugin.build_backbone(cfg, device="meta")
    root = backbone.adapter_root()
    lora.attach(root, settings)
    return compare(lora.adapter_state(root), state)


def check_fits(adapter: ExternalAdapter, overrides: Sequence[str], command: str) -> None:
    """The adapter's keys and shapes against the model built on the meta device (no weights read); when they do
    not fit and no preset was given, the plugin's other presets are tried to name the one that does."""
    found = _mismatch(adapter.plugin, adapter.cfg, adapter.settings, adapter.state)
    if not found:
        return
    preset = str(adapter.cfg.model.get("preset"))
    fix = "give model=NAME and model.preset= of the model it was trained on"
    if _option(overrides, "model.preset") is None:
        for other in dict.fromkeys(["tiny", *getattr(adapter.plugin, "released_presets", {})]):
            if other == preset:
                continue
            try:
                cfg = compose_for(adapter.plugin.name, other, overrides, command)
                if not _mismatch(adapter.plugin, cfg, adapter.settings, adapter.state):
                    fix = f"it fits model.preset={other}: add model.preset={other}"
                    break
            except Exception:  # a preset that does not build with these overrides is simply not the answer
                continue
    raise UserError(found.sentence(f"{command}: {adapter.path}", f"a LoRA of {adapter.plugin.name} at "
                                   f"model.preset={preset}", fix))


def resolve(source: Path, overrides: Sequence[str], alpha: float | None, trust_pickle: bool,
            command: str) -> ExternalAdapter:
    """SOURCE (an adapter trained elsewhere) → its plugin, config, settings and tensors, checked to fit."""
    from audiotrain.lora.native_format import settings_from_shapes
    from audiotrain.plugins import registry
    from audiotrain.train.lora_init import read_adapter

    source = Path(source).expanduser()
    if not source.exists():
        raise UserError(f"{command}: {source} does not exist: {GIVE}.")
    name, preset = _which_model(source, overrides, command)
    cfg = compose_for(name, preset, overrides, command)
    plugin = registry.get(name)
    try:
        src = read_adapter(source, plugin, trust_pickle)
    except UserError as exc:
        raise UserError(f"{command}: {str(exc).replace('lora.init_from=', '')}") from None
    shapes = settings_from_shapes(src.state)
    bare = src.settings is None
    settings = src.settings or shapes
    if not settings.target_modules:  # an original file whose config names no targets: the keys say them
        settings = replace(settings, target_modules=shapes.target_modules)
    if alpha is not None:
        settings = replace(settings, alpha=float(alpha))
    adapter = ExternalAdapter(Path(src.path), plugin, cfg, settings, dict(src.state), bare)
    check_fits(adapter, overrides, command)
    return adapter


def alpha_note(adapter: ExternalAdapter, alpha: float | None) -> str | None:
    if not adapter.bare or alpha is not None:
        return None
    return (f"{adapter.path} carries no LoRA config: rank {adapter.settings.r} from the tensors' shapes, alpha = r "
            f"(scale 1, as ACE-Step's pipeline plays such a file); give --alpha the value it was trained with to "
            f"change that.")
