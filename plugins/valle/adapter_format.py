"""VALL-E's LoRA export: ``lora.sft`` = {"module": LoRA tensors only, "config": the original's LoRA dataclass}.

Keys are the original's (``model.layers.{i}.self_attn.q_proj.lora_A`` / ``lora_B``: PEFT's keys without
``.weight``; same shapes, A [rank, in], B [out, rank]). In safetensors the config is a JSON string in the
header metadata; ``lora.pth`` holds the same entries as a torch dict (tensors under "module" or "lora").

The original's ``--lora`` path builds its ``LoRA`` dataclass from ``config`` (plus ``path``), so that entry holds
only the fields it has (:data:`ORIGINAL_FIELDS`): any other key is a TypeError there. What audiotrain needs
besides (dropout, target modules, rsLoRA and its own alpha) is a second JSON entry, ``audiotrain``, which the
original reads past. Its ``alpha`` is the one that gives the original the trained strength (``scale x rank``:
it has no rsLoRA). Files audiotrain wrote before, with ``dropout``/``target_modules`` inside ``config``, load
as they did.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping

import torch

from audiotrain.lora.adapter import LoRASettings
from audiotrain.lora.native_format import NativeFormat

#: the fields of the original's LoRA dataclass: the only keys its ``--lora`` path accepts in ``config``
ORIGINAL_FIELDS = ("name", "rank", "alpha", "training", "embeddings", "parametrize", "rvq_levels", "path")
#: the metadata / top-level entry holding what only audiotrain reads
EXTRA_KEY = "audiotrain"


def original_config(settings: LoRASettings) -> dict:
    """The ``config`` entry: the original's fields only, its alpha giving the same scale (alpha / rank)."""
    alpha = settings.scale * settings.r if settings.use_rslora else settings.alpha
    return {"name": "lora", "rank": settings.r, "alpha": alpha, "training": True, "embeddings": False,
            "parametrize": False, "rvq_levels": [], "path": None}


def audiotrain_extra(settings: LoRASettings) -> dict:
    """The ``audiotrain`` entry: the settings the original has no field for, and audiotrain's own alpha."""
    return {"alpha": settings.alpha, "dropout": settings.dropout, "target_modules": list(settings.target_modules),
            "use_rslora": settings.use_rslora}


def from_original(config: Mapping[str, Any]) -> LoRASettings:
    """The original's defaults where the file says nothing (rank = alpha = 128, dropout 0.1, the six linears).
    ``dropout``/``target_modules`` in ``config`` are read too: audiotrain's files before issue 15 held them there."""
    from audiotrain_valle.ar_nar import LORA_TARGETS

    return LoRASettings(r=int(config.get("rank", 128)), alpha=float(config.get("alpha", 128)),
                        dropout=float(config.get("dropout", 0.1)),
                        target_modules=list(config.get("target_modules") or LORA_TARGETS))


def with_extra(settings: LoRASettings, extra: Mapping[str, Any]) -> LoRASettings:
    """``settings`` with what the ``audiotrain`` entry says (it wins over ``config``)."""
    fields: dict[str, Any] = {}
    if "alpha" in extra:
        fields["alpha"] = float(extra["alpha"])
    if "dropout" in extra:
        fields["dropout"] = float(extra["dropout"])
    if extra.get("target_modules"):
        fields["target_modules"] = [str(t) for t in extra["target_modules"]]
    if "use_rslora" in extra:
        fields["use_rslora"] = bool(extra["use_rslora"])
    return dataclasses.replace(settings, **fields)


_NOTED: set[tuple[str, ...]] = set()


def targets_note(settings: LoRASettings) -> str | None:
    """One sentence when the adapter's targets are not vall-e's own policy (q, v, o, gate, up, down): its
    ``--lora`` loader wraps only its policy's layers and loads non-strictly, so the rest is silently dropped."""
    from audiotrain_valle.ar_nar import LORA_TARGETS

    own = {t.rsplit(".", 1)[-1] for t in LORA_TARGETS}
    got = {str(t).rsplit(".", 1)[-1] for t in settings.target_modules}
    if got == own:
        return None
    parts = []
    if got - own:
        parts.append(f"its weights for {', '.join(sorted(got - own))} are ignored there")
    if own - got:
        parts.append(f"{', '.join(sorted(own - got))} get a LoRA that starts at zero")
    return (f"lora.target_modules ({', '.join(sorted(got))}) differs from vall-e's own LoRA policy "
            f"({', '.join(sorted(own))}): in vall-e's --lora path {' and '.join(parts)}; audiotrain reads the file "
            f"back in full.")


@dataclasses.dataclass(frozen=True)
class VALLELoRAFormat(NativeFormat):
    """:class:`NativeFormat` plus the ``audiotrain`` entry beside the original's ``config``."""

    def save_state(self, state: Mapping[str, torch.Tensor], settings: LoRASettings, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {self.to_native(k): v.detach().contiguous() for k, v in state.items()}
        meta = {"format": "pt", self.metadata_key: json.dumps(self.encode(settings)),
                EXTRA_KEY: json.dumps(audiotrain_extra(settings))}
        out = directory / self.filename
        save_file(state, str(out), metadata=meta)
        note = targets_note(settings)
        if note is not None and tuple(settings.target_modules) not in _NOTED:  # once per run, not every save
            from audiotrain.train.console import console

            _NOTED.add(tuple(settings.target_modules))
            console.print(f"[yellow]Note:[/] {note}", highlight=False)
        return out

    def read(self, path: str | Path, option: str | None = None, trust_pickle: bool = False,
             fallback: bool = False) -> tuple[LoRASettings | None, dict[str, torch.Tensor]]:
        settings, state = super().read(path, option=option, trust_pickle=trust_pickle, fallback=fallback)
        if settings is None:
            return None, state
        path = Path(path).expanduser()
        path = path / self.filename if path.is_dir() else path
        extra = self._extra(path, option, trust_pickle)
        try:
            return (with_extra(settings, extra) if extra else settings), state
        except (TypeError, ValueError) as exc:
            from audiotrain.safe_files import BadFileError

            where = f"{option}={path}" if option else str(path)
            raise BadFileError(f"{where} has an '{EXTRA_KEY}' entry audiotrain cannot read ({exc}); give "
                               f"{self.expected}.") from None

    def _extra(self, path: Path, option: str | None, trust_pickle: bool) -> dict:
        from audiotrain.safe_files import BadFileError, load_torch, safetensors_metadata

        where = f"{option}={path}" if option else str(path)
        if path.suffix == ".pth":
            raw = load_torch(path, option=option, expected=self.expected, trust_pickle=trust_pickle).get(EXTRA_KEY)
        else:
            raw = safetensors_metadata(path, option=option, expected=self.expected).get(EXTRA_KEY)
        if raw is None:
            return {}
        try:
            value = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            value = None
        if not isinstance(value, Mapping):
            raise BadFileError(f"{where} has an '{EXTRA_KEY}' entry that is not a JSON object; give {self.expected}.")
        return dict(value)


FORMAT = VALLELoRAFormat(filename="lora.sft", expected="a VALL-E lora.sft / lora.pth", metadata_key="config",
                         encode=original_config, decode=from_original, drop_suffix=".weight",
                         pth_state_keys=("module", "lora"))
save, load = FORMAT.save, FORMAT.load
