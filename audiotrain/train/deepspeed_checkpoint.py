"""A DeepSpeed checkpoint folder checked as data before DeepSpeed opens it.

DeepSpeed reads its own files (``<folder>/latest`` names a tag; ``<folder>/<tag>/*model_states.pt`` and
``*optim_states.pt``) by unpickling them fully, which would run code a crafted file carries. So
every file of the tag is first read here with ``weights_only=True`` (the tensors memory-mapped, so it costs the
pickles), allowing only the few plain classes DeepSpeed's own files hold; a file that needs more is refused in one
sentence before ``fit`` starts (unless ``trust_pickle=true``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from audiotrain.safe_files import BadFileError, UnsafeFileError, load_torch


def _deepspeed_globals() -> list[Any]:
    """The classes DeepSpeed pickles into its checkpoints besides tensors and containers (plain data holders)."""
    found: list[Any] = []
    try:
        from deepspeed.runtime.fp16 import loss_scaler

        found += [c for c in (getattr(loss_scaler, n, None) for n in ("LossScaler", "DynamicLossScaler")) if c]
    except ImportError:
        pass
    try:
        from deepspeed.runtime.zero.config import ZeroStageEnum

        found.append(ZeroStageEnum)
    except ImportError:
        pass
    try:
        from deepspeed.utils.tensor_fragment import fragment_address

        found.append(fragment_address)
    except ImportError:
        pass
    return found


def read_client_state(folder: Path, *, option: str | None, trust_pickle: bool, instead: str) -> dict:
    """Every file of the folder's ``latest`` tag read as data; returns the model-states file's top level (which
    holds the client state audiotrain saved, ``audiotrain`` among it)."""
    where = f"{option}={folder}" if option else str(folder)
    tag = (folder / "latest").read_text(encoding="utf-8", errors="replace").strip()
    files = sorted((folder / tag).glob("*.pt")) if tag and (folder / tag).is_dir() else []
    model_states = [f for f in files if f.name.endswith("model_states.pt")]
    if not model_states:
        raise BadFileError(f"{where} is a DeepSpeed checkpoint folder whose latest tag ({tag or 'empty'}) holds no "
                           f"model states file (an incomplete copy?): pass a complete checkpoint folder.")
    allowed = _deepspeed_globals()
    states: dict = {}
    for f in files:
        try:
            loaded = load_torch(f, expected=f"a complete DeepSpeed checkpoint folder as {option or 'ckpt_path'}",
                                trust_pickle=trust_pickle, mmap=True, safe_globals=allowed, instead=instead)
        except (BadFileError, UnsafeFileError) as exc:
            raise type(exc)(f"{where}: {exc}") from None
        if f == model_states[0]:
            if not isinstance(loaded, dict):
                raise BadFileError(f"{f} is not a DeepSpeed model states file: pass a complete checkpoint folder.")
            states = loaded
    return states
