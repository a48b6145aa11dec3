"""``lora.init_from``: a LoRA run starts from an adapter trained elsewhere - a PEFT folder (audiotrain's
``adapters/<name>/peft`` or any PEFT save), the plugin's own native adapter file (ACE-Step's
``pytorch_lora_weights.safetensors`` from its trainer or from audiotrain, VALL-E's ``lora.sft``/``.pth``), or an
audiotrain run directory (its ``adapters/final``). Read as data through the plugin's native format (scale
folded into ``lora_B`` undone, original key names mapped to PEFT's). A file without a LoRA config gets its rank
from the tensors' shapes and its alpha from ``lora.alpha`` (the run's). The rank must be the run's ``lora.r`` and
the targets the run's (one sentence naming the setting to change otherwise); step 0, fresh optimizer."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from audiotrain.errors import UserError
from audiotrain.lora import adapter as lora_adapter
from audiotrain.lora.adapter import LoRASettings
from audiotrain.train.init_from import Source, _load_lora


def _expected(native: Any) -> str:
    own = f", {native.filename} (this model's own adapter file)" if native is not None else ""
    return f"a PEFT adapter folder (adapter_config.json + adapter_model.safetensors){own}, or a run directory"


def read_adapter(value: Any, plugin: Any, trust_pickle: bool = False, root: nn.Module | None = None) -> Source:
    """The adapter ``lora.init_from=value`` names, as PEFT-keyed tensors with its settings (None when the file
    carries no LoRA config: an original trainer's bare file). ``root`` (the adapter root, adapter attached) lets
    the plugin read a layout of its own first (``Plugin.read_adapter_native``)."""
    native = plugin.native_adapter_format() if hasattr(plugin, "native_adapter_format") else None
    path = Path(str(value)).expanduser()
    where = f"lora.init_from={value}"
    if not path.exists():
        raise UserError(f"{where} does not exist: give {_expected(native)}.")
    own = plugin.read_adapter_native(path, root) if root is not None and hasattr(plugin, "read_adapter_native") \
        else None
    if own is not None:
        return Source(path, "lora", own[1], own[0])
    if path.is_dir() and (path / "adapters" / "final").is_dir():
        path = path / "adapters" / "final"  # a run directory
    candidates = [path / "peft", path] if path.is_dir() else [path.parent] if path.name == "adapter_model.safetensors" else []
    for folder in candidates:
        if (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file():
            settings, state = lora_adapter.load_peft(folder, option="lora.init_from")
            return Source(folder, "lora", state, settings, lora_adapter.peft_base_model(folder))
    if native is not None:
        file = path if path.is_file() else next((p for p in (path / native.filename, *path.glob(f"*/{native.filename}"))
                                                if p.is_file()), None)
        if file is not None:
            settings, state = native.read(file, option="lora.init_from", trust_pickle=trust_pickle)
            return Source(file, "lora", state, settings)  # settings None: the file carries no LoRA config
    raise UserError(f"{where} is not an adapter audiotrain can read: give {_expected(native)}.")


def load_adapter(value: Any, root: nn.Module, settings: LoRASettings | None, plugin: Any,
                 trust_pickle: bool = False) -> tuple[Source, int, str | None]:
    """Load ``lora.init_from`` into the attached adapter of ``root``: (the source, tensors loaded, a note for the
    user when the file carries no LoRA config)."""
    if settings is None:
        raise UserError(f"lora.init_from={value} needs a LoRA run, and this one is a full fine-tune (lora=none): "
                        f"drop lora=none, or use model.init_from={value} to merge the adapter into the weights.")
    src = read_adapter(value, plugin, trust_pickle, root)
    note = None
    if src.settings is None:
        note = (f"{src.path} carries no LoRA config: its rank comes from the tensors' shapes and its alpha is this "
                f"run's lora.alpha={settings.alpha:g}; give the alpha it was trained with (lora.alpha=, or "
                f"lora.config_path= its lora_config.json).")
    if src.settings is not None and not src.settings.target_modules:
        src.settings = None  # an original file that names no targets: the run's targets are checked by the keys
    return src, _load_lora(src, root, settings), note
