"""The checkpoint a job continues from (``ckpt_path=``, ``resume=auto``, a sweep job's own) or evaluates
(``mode=eval``), checked before anything heavy starts.

:func:`read_checkpoint` reads it as data (``torch.load(weights_only=True)`` through :mod:`audiotrain.safe_files`,
the tensors memory-mapped, so the check costs the pickle and not the weights) and refuses, in one sentence naming
the file, what it is and what to pass instead: a missing file, a folder, an empty, truncated or text file, a
safetensors file (weights or an adapter), a plain state dict, a file that carries code (unless
``trust_pickle=true``), and a checkpoint of another plugin, preset or adapter (:mod:`checkpoint_identity`).
:func:`newest_good` is ``resume=auto``'s pick: the newest complete checkpoint, skipping (with a note) an empty or
truncated newer one (a crash mid-copy) but never one that carries code.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from audiotrain.safe_files import BadFileError, UnsafeFileError, check_file, file_kind, load_torch
from audiotrain.train import checkpoint_identity

EXPECTED = "a .ckpt file from a run's checkpoints/ folder"


class NotACheckpointError(BadFileError):
    """A readable file that is not a Lightning checkpoint (weights, an adapter, a plain state dict)."""


def _reworded(exc: Exception, where: str, path: Path) -> Exception:
    """``exc`` with the file named as ``where`` (the option it came from) when safe_files named it by path."""
    text = str(exc)
    if where != str(path) and text.startswith(str(path)) and text[len(str(path)):][:1] in (" ", ":"):
        text = where + text[len(str(path)):]
    return type(exc)(text)


def read_checkpoint(path: Path, cfg: Any, *, mmap: bool = True, module: Any = None) -> dict:
    """The checkpoint at ``path`` as data, checked to be a Lightning checkpoint of the run ``cfg`` describes.

    ``mmap`` maps the tensors instead of reading them (a check); ``module`` adds the check of the weights' names
    and shapes for a checkpoint without identity metadata."""
    path = Path(path)
    where, _ = checkpoint_identity.source(cfg, path)
    option = "ckpt_path" if cfg.get("ckpt_path") else None
    trust = bool(cfg.get("trust_pickle", False))
    try:
        if path.is_dir() and (path / "latest").is_file():  # DeepSpeed's checkpoint folder
            from audiotrain.train.deepspeed_checkpoint import read_client_state

            state = read_client_state(path, option=option, trust_pickle=trust, instead=EXPECTED)
            checkpoint_identity.check(state, cfg, path)
            return state
        check_file(path, option=option, expected=EXPECTED)
        kind = file_kind(path)
        if kind == "safetensors":
            raise NotACheckpointError(
                f"{where} is a safetensors file (exported weights or an adapter), not a training checkpoint: pass "
                f"{EXPECTED} to continue a run, or start a new run from these weights with model.init_from={path}.")
        if kind == "text":
            raise NotACheckpointError(f"{where} is a text file, not a training checkpoint: pass {EXPECTED}.")
        checkpoint = load_torch(path, option=option, expected=EXPECTED, trust_pickle=trust, mmap=mmap,
                                instead=EXPECTED)
    except (BadFileError, UnsafeFileError) as exc:
        raise _reworded(exc, where, path) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise NotACheckpointError(_not_lightning(checkpoint, where, path))
    checkpoint_identity.check(checkpoint, cfg, path, module)
    return checkpoint


def _not_lightning(obj: Any, where: str, path: Path) -> str:
    import torch

    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return (f"{where} is a plain state dict ({len(obj)} tensors, weights only), not a training checkpoint (no "
                f"step, optimizer or adapter settings to continue): pass {EXPECTED}, or start a new run from these "
                f"weights saved as .safetensors (safetensors.torch.save_file) with model.init_from=FILE.")
    what = f"a dict without state_dict (keys: {', '.join(map(str, list(obj)[:4]))})" if isinstance(obj, dict) \
        else f"a {type(obj).__name__}"
    return f"{where} is a PyTorch file holding {what}, not a Lightning checkpoint: pass {EXPECTED}."


def newest_good(candidates: Iterable[Path], cfg: Any, what: str) -> Path | None:
    """The first of ``candidates`` (newest first) that reads as a checkpoint of this run; an empty, truncated or damaged newer one
    is skipped with a printed note (a crash mid-copy), one that carries code or is of another model is refused.

    None when there are no candidates; a sentence when there are some and none is complete."""
    from audiotrain.train.console import console

    skipped: list[str] = []
    for path in candidates:
        try:
            read_checkpoint(path, cfg)
        except NotACheckpointError:
            raise  # a file someone put there by hand: said, not skipped
        except BadFileError as exc:  # empty, truncated, damaged: a crash mid-copy
            skipped.append(str(path))
            where, _ = checkpoint_identity.source(cfg, path)
            reason = str(exc).removeprefix(where).strip(" :").split(";")[0]
            console.print(f"[yellow]{what}: not resuming {path}, which {reason}; taking the checkpoint before it.[/]",
                          markup=True, highlight=False)
            continue
        return path.resolve()  # code in the file, another model: the sentence goes up
    if skipped:
        raise BadFileError(f"{what}: none of the {len(skipped)} checkpoints found is complete (newest: {skipped[0]}; "
                           f"empty or truncated copies): pass ckpt_path= a complete one, or remove them to start "
                           f"fresh.")
    return None
