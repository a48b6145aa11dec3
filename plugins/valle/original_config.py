"""``model.config=``: the original project's YAML (its ``data/config.yaml``) for a checkpoint that carries no
embedded config. The file is read as data (``yaml.safe_load``); its model is the first entry of ``models:``
(or a ``model:`` mapping), with the file's top-level ``audio_backend`` beside it, as vall-e reads it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from audiotrain.errors import UserError

FIX = "give the vall-e YAML the checkpoint was trained with (its data/config.yaml, with a models: list)"


def read_original_config(path: str | Path) -> dict[str, Any]:
    """The original ``Model`` dict of a vall-e YAML, checked to build (one sentence when it cannot)."""
    import yaml

    from .presets import resolve_config

    p = Path(str(path)).expanduser()
    where = f"model.config={path}"
    if not p.is_file():
        raise UserError(f"{where} {'is a folder' if p.is_dir() else 'does not exist'}: {FIX}.")
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{where} is not a readable YAML file ({reason}): {FIX}.") from None
    models = doc.get("models") if isinstance(doc, dict) else None
    model = models[0] if isinstance(models, list) and models else (doc.get("model") if isinstance(doc, dict) else None)
    if not isinstance(model, dict):
        raise UserError(f"{where} has no models: entry (a list holding the model's name, size, version, "
                        f"experimental, ...): {FIX}.")
    model = dict(model)
    if isinstance(doc.get("audio_backend"), str) and "audio_backend" not in model:
        model["audio_backend"] = doc["audio_backend"]
    model.setdefault("experimental", {})  # marks it as the original's layout even when the file has none
    try:
        resolve_config(model)
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{where}: its model cannot be built ({exc}); {FIX}.") from None
    return model
