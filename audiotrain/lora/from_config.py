"""Turn the composed ``lora`` group (and an optional ``lora.config_path`` JSON) into LoRASettings."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from audiotrain.lora.adapter import ALGOS, LoRAConfigError, LoRASettings


def settings_from_cfg(lora: Any, default_targets: Sequence[str]) -> LoRASettings | None:
    """None when ``lora=none`` (full fine-tune). ``config_path`` JSON wins over the group's values."""
    if not lora.get("enabled", True):
        return None
    if lora.get("config_path"):
        path = Path(str(lora.config_path)).expanduser()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LoRAConfigError(f"lora.config_path={lora.config_path} does not exist: give the path of a lora_config.json.") from None
        except json.JSONDecodeError as exc:
            raise LoRAConfigError(f"lora.config_path={lora.config_path} is not valid JSON ({exc.msg} at line {exc.lineno}).") from None
        s = LoRASettings.from_json(data)
        if not s.target_modules:
            s.target_modules = list(default_targets)
        return s
    targets = list(lora.target_modules) if lora.get("target_modules") else list(default_targets)
    algo = str(lora.get("algo") or "lora")
    if algo not in ALGOS:
        raise LoRAConfigError(f"lora.algo={algo} is unknown: use lora=default (LoRA) or lora=lokr (LoKr).")
    return LoRASettings(r=int(lora.r), alpha=float(lora.alpha), dropout=float(lora.dropout),
                        target_modules=targets, use_rslora=bool(lora.use_rslora), algo=algo,
                        module_dropout=float(lora.get("module_dropout") or 0.0),
                        decompose_both=bool(lora.get("decompose_both") or False),
                        decompose_factor=int(lora.get("decompose_factor", -1)))
