"""LoRAAdapter: a PEFT adapter - LoRA (``lora.algo=lora``) or LoKr (``lora=lokr``: PEFT's Kronecker-product
adapter, ``lokr_w1``/``lokr_w2`` and their low-rank halves) - attached in place to a backbone's adapter root.

Module names stay those of the original model (no ``base_model.model`` wrapper in the live model),
so the original project's LoRA target names hit the same layers. Saved formats:
- PEFT: ``adapter_config.json`` + ``adapter_model.safetensors`` (keys ``base_model.model.<name>...``);
- the original ecosystem's single file where a plugin has one (see ``native_format.py``).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from audiotrain.errors import UserError

PEFT_PREFIX = "base_model.model."

#: the adapters ``lora.algo`` selects, and the name part PEFT gives each one's weights
ALGOS = {"lora": "lora_", "lokr": "lokr_"}
#: the PEFT config ``peft_type`` of each algo
PEFT_TYPES = {"lora": "LORA", "lokr": "LOKR"}


def is_adapter_key(name: str) -> bool:
    """A parameter/state key of an adapter weight (LoRA's ``lora_A``/``lora_B``, LoKr's ``lokr_w1``...)."""
    return any(marker in name for marker in ALGOS.values())


class LoRAConfigError(UserError):
    """A LoRA setting a user can fix (unknown target module, bad rank)."""


@dataclass
class LoRASettings:
    r: int = 16
    alpha: float = 32
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=list)
    use_rslora: bool = False
    #: "lora" or "lokr"; for LoKr ``dropout`` is PEFT's ``rank_dropout``, and the three fields below are PEFT's
    algo: str = "lora"
    module_dropout: float = 0.0
    decompose_both: bool = False
    decompose_factor: int = -1

    @property
    def scale(self) -> float:
        """The factor PEFT multiplies the adapter's product by: alpha/r (LoRA and LoKr), alpha/sqrt(r) for rsLoRA."""
        return self.alpha / math.sqrt(self.r) if self.use_rslora else self.alpha / self.r

    def to_peft(self):
        if self.algo == "lokr":
            from peft import LoKrConfig

            return LoKrConfig(r=self.r, alpha=self.alpha, rank_dropout=self.dropout, module_dropout=self.module_dropout,
                              decompose_both=self.decompose_both, decompose_factor=self.decompose_factor,
                              target_modules=list(self.target_modules))
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=list(self.target_modules), use_rslora=self.use_rslora, bias="none")

    def to_json(self) -> dict[str, Any]:
        if self.algo == "lokr":
            return {"peft_type": "LOKR", "r": self.r, "alpha": self.alpha, "rank_dropout": self.dropout,
                    "module_dropout": self.module_dropout, "decompose_both": self.decompose_both,
                    "decompose_factor": self.decompose_factor, "target_modules": list(self.target_modules)}
        return {"r": self.r, "lora_alpha": self.alpha, "lora_dropout": self.dropout,
                "target_modules": list(self.target_modules), "use_rslora": self.use_rslora}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "LoRASettings":
        """Read an ACE-Step ``lora_config.json`` / PEFT ``adapter_config.json`` (LoRA or LoKr) as-is."""
        if str(data.get("peft_type") or "").upper() == "LOKR":
            return cls(r=int(data.get("r", 8)), alpha=float(data.get("alpha", 8)),
                       dropout=float(data.get("rank_dropout", 0.0)), target_modules=list(data.get("target_modules") or []),
                       algo="lokr", module_dropout=float(data.get("module_dropout", 0.0)),
                       decompose_both=bool(data.get("decompose_both", False)),
                       decompose_factor=int(data.get("decompose_factor", -1)))
        return cls(r=int(data.get("r", 8)), alpha=float(data.get("lora_alpha", data.get("alpha", 8))),
                   dropout=float(data.get("lora_dropout", 0.0)),
                   target_modules=list(data.get("target_modules") or []),
                   use_rslora=bool(data.get("use_rslora", False)))


def matches(name: str, target: str) -> bool:
    """PEFT's suffix rule: the module name equals the target or ends with ``.target``."""
    return name == target or name.endswith("." + target)


def check_targets(module_names: Iterable[str], targets: Iterable[str]) -> list[str]:
    """Targets that match no module (empty list = all fine)."""
    names = list(module_names)
    return [t for t in targets if not any(matches(n, t) for n in names)]


GENERIC_LEAVES = {"conv", "linear", "out", "proj", "fc"}


def target_suffix(name: str) -> str:
    """The shortest suffix a user would write for a module: ``to_out.0``, ``inverted_conv.conv``."""
    parts = name.split(".")
    i = len(parts) - 1
    while i > 0 and (parts[i].isdigit() or parts[i] in GENERIC_LEAVES):
        i -= 1
    return ".".join(parts[i:])


def unknown_targets_message(missing: list[str], module_names: Iterable[str]) -> str:
    import difflib

    leaves = sorted({target_suffix(n) for n in module_names if n})

    def named(m: str) -> str:
        guess = difflib.get_close_matches(m, leaves, n=1, cutoff=0.6)
        return f"{m!r} (did you mean {guess[0]!r}?)" if guess else repr(m)

    return (f"lora.target_modules has {', '.join(named(m) for m in missing)}, which match no module of this model; "
            f"use names from: {', '.join(leaves)}.")


def expected_trainable(root: nn.Module, settings: LoRASettings) -> int:
    """The LoRA parameter count by formula: r·(in + out) per Linear, r·(in·k + out) per Conv."""
    total = 0
    for name, mod in root.named_modules():
        if not any(matches(name, t) for t in settings.target_modules):
            continue
        if isinstance(mod, nn.Linear):
            total += settings.r * (mod.in_features + mod.out_features)
        elif isinstance(mod, (nn.Conv1d, nn.Conv2d)):
            k = int(torch.tensor(mod.kernel_size).prod())
            total += settings.r * (mod.in_channels * k // mod.groups) + settings.r * mod.out_channels
        elif isinstance(mod, nn.Embedding):
            total += settings.r * (mod.num_embeddings + mod.embedding_dim)
    return total


def attach(root: nn.Module, settings: LoRASettings) -> nn.Module:
    """Inject LoRA layers into ``root`` in place; freeze everything else. Returns ``root``."""
    from peft import inject_adapter_in_model

    names = [n for n, _ in root.named_modules()]
    missing = check_targets(names, settings.target_modules)
    if missing:
        raise LoRAConfigError(unknown_targets_message(missing, names))
    from transformers.pytorch_utils import Conv1D

    targeted = [(n, m) for n, m in root.named_modules() if any(matches(n, t) for t in settings.target_modules)]
    if settings.algo == "lokr":
        from audiotrain.lora.lokr_support import lokr_problem

        problem = lokr_problem(settings, targeted)
        if problem:
            raise LoRAConfigError(problem)
    for p in root.parameters():
        p.requires_grad_(False)
    config = settings.to_peft()
    if settings.algo == "lora" and targeted and all(isinstance(m, Conv1D) for _, m in targeted):
        config.fan_in_fan_out = True  # GPT-2's (in, out) layers: PEFT needs to know (it would warn and set it)
    inject_adapter_in_model(config, root)
    marker = ALGOS[settings.algo]
    for n, p in root.named_parameters():
        p.requires_grad_(marker in n)
    return root


def adapter_state(root: nn.Module) -> dict[str, torch.Tensor]:
    """LoRA weights keyed by original module names (``<name>.lora_A.weight``)."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(root).items()}


def load_adapter_state(root: nn.Module, state: Mapping[str, torch.Tensor], source: str = "The adapter",
                       fix: str = "give an adapter trained for this model, its preset and its lora.target_modules"
                       ) -> None:
    """Copy a PEFT-keyed LoRA state (``<module>.lora_A.weight``) into the attached adapter, strictly: keys and
    shapes must equal the adapter's, else one sentence (:class:`~audiotrain.models.state_dict.StateDictMismatch`)
    naming ``source`` and ``fix``."""
    from peft import set_peft_model_state_dict

    from audiotrain.models.state_dict import check_state_dict

    check_state_dict(adapter_state(root), state, source, "this model's LoRA adapter", fix)
    set_peft_model_state_dict(root, dict(state))


def save_peft(root: nn.Module, settings: LoRASettings, directory: str | Path, base_model: str = "") -> Path:
    return save_peft_state(adapter_state(root), settings, directory, base_model)


def save_peft_state(state: Mapping[str, torch.Tensor], settings: LoRASettings, directory: str | Path,
                    base_model: str = "") -> Path:
    """A PEFT folder (``adapter_config.json`` + ``adapter_model.safetensors``) from ``adapter_state``-keyed tensors."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    cfg = settings.to_peft()
    cfg.base_model_name_or_path = base_model or None
    cfg.save_pretrained(str(d))
    state = {PEFT_PREFIX + k: v.contiguous() for k, v in state.items()}
    save_file(state, str(d / "adapter_model.safetensors"), metadata={"format": "pt"})
    return d


PEFT_EXPECTED = "a PEFT LoRA folder (adapter_config.json + adapter_model.safetensors), e.g. a run's adapters/final/peft"


def peft_config(directory: str | Path, option: str | None = None) -> dict[str, Any]:
    """A PEFT folder's ``adapter_config.json``, checked to describe a LoRA (one sentence when it does not)."""
    from audiotrain.safe_files import BadFileError, read_json

    d = Path(directory).expanduser()
    where = f"{option}={d}" if option else str(d)
    if not d.exists():
        raise BadFileError(f"{where}: no such folder; pass {PEFT_EXPECTED}.")
    if not d.is_dir():
        raise BadFileError(f"{where} is a file, not a folder; pass the folder that holds it ({PEFT_EXPECTED}).")
    cfg_path, w_path = d / "adapter_config.json", d / "adapter_model.safetensors"
    if not cfg_path.is_file() or not w_path.is_file():
        lacks = " and ".join(p.name for p in (cfg_path, w_path) if not p.is_file())
        raise LoRAConfigError(f"{where} is not a PEFT adapter folder: it lacks {lacks}; pass {PEFT_EXPECTED}.")
    data = read_json(cfg_path, expected=PEFT_EXPECTED)
    if not isinstance(data, dict):
        raise BadFileError(f"{cfg_path} holds a JSON {type(data).__name__}, not a PEFT adapter config; "
                           f"pass {PEFT_EXPECTED}.")
    kind = str(data.get("peft_type") or "LORA").upper()
    if kind not in PEFT_TYPES.values():
        raise LoRAConfigError(f"{where} is a PEFT {kind} adapter, not a LoRA or LoKr; pass {PEFT_EXPECTED}.")
    try:
        r = int(data.get("r", 8))
    except (TypeError, ValueError):
        r = 0
    if r < 1:
        raise BadFileError(f"{cfg_path} gives the LoRA rank r={data.get('r')!r}, not a positive whole number; "
                           f"pass {PEFT_EXPECTED}.")
    return data


def load_peft(directory: str | Path, option: str | None = None) -> tuple[LoRASettings, dict[str, torch.Tensor]]:
    """A PEFT LoRA folder → (settings, state keyed ``<module>.lora_A.weight``). Read as data (JSON and
    safetensors); a missing, damaged or non-LoRA folder is one sentence (a UserError)."""
    from audiotrain.safe_files import BadFileError, load_safetensors

    d = Path(directory).expanduser()
    settings = LoRASettings.from_json(peft_config(d, option))
    w_path = d / "adapter_model.safetensors"
    raw = load_safetensors(w_path, expected=f"a complete copy of the adapter ({PEFT_EXPECTED})")
    state = {k[len(PEFT_PREFIX):] if k.startswith(PEFT_PREFIX) else k: v for k, v in raw.items()}
    marker = "." + ALGOS[settings.algo]
    if not any(marker in k for k in state):
        what = "LoKr weights (no lokr_w1 / lokr_w2 tensors" if settings.algo == "lokr" else \
            "LoRA weights (no lora_A / lora_B tensors"
        raise BadFileError(f"{w_path} holds no {what}; {len(state)} others); pass {PEFT_EXPECTED}.")
    return settings, state


def peft_base_model(directory: str | Path) -> str:
    """``base_model_name_or_path`` of a PEFT folder (audiotrain writes ``<plugin>:<preset>``), "" when absent."""
    try:
        data = json.loads((Path(directory) / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    return str(data.get("base_model_name_or_path") or "") if isinstance(data, dict) else ""


def merge(root: nn.Module) -> nn.Module:
    """Fold every adapter layer (LoRA or LoKr) into its base weight and put the plain layer back. In place."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, mod in list(root.named_modules()):
        if isinstance(mod, BaseTunerLayer):
            mod.merge(safe_merge=True)
            parent_name, _, child = name.rpartition(".")
            parent = root.get_submodule(parent_name) if parent_name else root
            setattr(parent, child, mod.get_base_layer())
    return root


def algo_problem(source: str, found: LoRASettings | None, run: LoRASettings) -> str | None:
    """One sentence when an adapter is of another kind (LoRA / LoKr) than this run's (None when they agree or the
    file does not say)."""
    if found is None or found.algo == run.algo:
        return None
    names = {"lora": "lora=default", "lokr": "lora=lokr"}
    return (f"{source} is a {found.algo.upper()} adapter and this run trains a {run.algo.upper()} one: set "
            f"{names.get(found.algo, 'lora.algo=' + found.algo)} to continue from it.")


def rank_problem(source: str, found: LoRASettings, run: LoRASettings) -> str | None:
    """One sentence when an adapter's rank is not this run's ``lora.r`` (None when they agree)."""
    if int(found.r) == int(run.r):
        return None
    return (f"{source} is a LoRA of rank {found.r}, this run's lora.r={run.r}: set lora.r={found.r} (and the "
            f"lora.alpha it was trained with) or pass an adapter of rank {run.r}.")


def base_problem(source: str, base_model: str, model: str, preset: Any) -> str | None:
    """One sentence when an adapter saved for ``<model>:<preset>`` (its ``base_model_name_or_path``) is of another
    model or preset than this run's (None when unknown or the same)."""
    if ":" not in base_model:
        return None
    other, _, other_preset = base_model.partition(":")
    if other != model:
        return (f"{source} is a LoRA of the {other} model (preset {other_preset}), not of {model}: pass an adapter "
                f"trained with model={model}.")
    if other_preset and str(preset) and other_preset != str(preset):
        return (f"{source} is a LoRA of {model} at model.preset={other_preset}, this run's model.preset={preset}: use "
                f"model.preset={other_preset} or an adapter trained at model.preset={preset}.")
    return None
