"""Files from strangers read as data, never as code.

Every weights, checkpoint, adapter, embedding or cache file audiotrain opens goes through here:

- ``load_torch``: ``torch.load(weights_only=True)`` (tensors, numbers, strings, containers: what a Lightning or
  PyTorch checkpoint holds). A file that needs full unpickling — it names a Python callable, as a crafted
  ``.ckpt`` does — is refused with one sentence naming the file and the opt-in ``trust_pickle=true``, which runs
  whatever code the file carries and is only for files you made yourself.
- ``load_safetensors`` / ``safetensors_metadata``: safetensors (no code can be in it at all).

A path that is missing, a folder, empty, truncated or not that kind of file at all is one sentence too (a
``BadFileError``): the option it came from, the file, what it is, and what to pass instead.
"""
from __future__ import annotations

import json
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, Sequence

from audiotrain.errors import UserError

TRUST_PICKLE = "trust_pickle=true"


class BadFileError(UserError):
    """A file that is missing, empty, truncated or not what the option takes."""


class UnsafeFileError(UserError):
    """A file that only full unpickling (running code from it) could read."""


def where(option: str | None, path: Path) -> str:
    """How a message names a file: ``option=path`` when an option gave it, else the path."""
    return f"{option}={path}" if option else str(path)


def file_kind(path: str | Path) -> str:
    """What a file looks like from its first bytes: ``zip`` (torch.save), ``pickle`` (legacy torch.save),
    ``safetensors``, ``text``, ``empty`` or ``unknown``."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if not head:
        return "empty"
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] in range(2, 6):
        return "pickle"
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 1 < n < 100_000_000 and head[8:9] == b"{":
            return "safetensors"
    try:
        head.decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return "unknown"


def check_file(path: str | Path, *, option: str | None = None, expected: str) -> Path:
    """``path`` as a Path when it is a non-empty file, else a BadFileError naming what it is instead."""
    path = Path(path).expanduser()
    shown = where(option, path)
    if not path.exists():
        raise BadFileError(f"{shown}: no such file; pass {expected}.")
    if path.is_dir():
        raise BadFileError(f"{shown} is a folder, not a file; pass {expected}.")
    if path.stat().st_size == 0:
        raise BadFileError(f"{shown} is empty (0 bytes, an interrupted copy?); pass {expected}.")
    return path


def first_line(exc: BaseException, limit: int = 160) -> str:
    """An exception's first line (its type's name when it has no text), at most ``limit`` characters."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]


def _refused_global(exc: BaseException) -> str | None:
    """The Python global torch's weights-only unpickler refused, from its message (``posix.system``), if any."""
    text = str(exc)
    for marker in ("Unsupported global: GLOBAL ", "unsupported GLOBAL ", "GLOBAL "):
        if marker in text:
            rest = text.split(marker, 1)[1].split()
            if rest:
                return rest[0].rstrip(".,:;'\"")
    if "Unsupported operand" in text or "weights_only" in text.lower():
        return "a Python object"
    return None


def load_torch(path: str | Path, *, option: str | None = None, expected: str, trust_pickle: bool = False,
               map_location: Any = "cpu", mmap: bool = False, safe_globals: Sequence[Any] = (),
               instead: str | None = None) -> Any:
    """``torch.load`` as data (``weights_only=True``), every failure one sentence.

    ``trust_pickle=True`` unpickles fully: only for a file you wrote yourself (it can run any code it carries).
    ``mmap=True`` maps the tensors of a zip-format file instead of reading them (a cheap full check of what the
    file holds: the pickle is read, the tensor data is not); ``safe_globals`` are classes the weights-only
    unpickler may rebuild besides tensors and containers; ``instead`` is what to pass in place of a file that
    carries code (default: a file of tensors only)."""
    import torch

    path = check_file(path, option=option, expected=expected)
    shown = where(option, path)
    kind = file_kind(path)
    if kind == "safetensors":
        return load_safetensors(path, option=option, expected=expected)
    if kind not in ("zip", "pickle"):
        what = "a text file" if kind == "text" else "not a PyTorch file"
        raise BadFileError(f"{shown} is {what}, not a PyTorch checkpoint; pass {expected}.")
    if kind == "zip" and not zipfile.is_zipfile(path):  # torch.save's zip lost its end (the central directory)
        raise BadFileError(f"{shown} is truncated (an interrupted download or copy?) and cannot be read; "
                           f"pass a complete copy of {expected}.")
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(str(path), map_location=map_location, weights_only=not trust_pickle,
                              mmap=mmap and kind == "zip")
    except pickle.UnpicklingError as exc:
        refused = _refused_global(exc)
        if refused and not trust_pickle:
            raise UnsafeFileError(
                f"{shown} holds pickled Python code ({refused}) that loading would run, so it was not opened; "
                f"pass {instead or 'a file of tensors only (safetensors, or a plain state dict)'}, or — only for a "
                f"file you made yourself — add {TRUST_PICKLE}.") from None
        raise BadFileError(f"{shown} is damaged or not a PyTorch checkpoint ({first_line(exc)}); pass {expected}.") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError, ImportError) as exc:
        text = str(exc)
        if "central directory" in text or "zip archive" in text or isinstance(exc, EOFError):
            raise BadFileError(f"{shown} is truncated (an interrupted download or copy?) and cannot be read; "
                               f"pass a complete copy of {expected}.") from None
        raise BadFileError(f"{shown} could not be read as a PyTorch checkpoint ({first_line(exc)}); "
                           f"pass {expected}.") from None


def load_safetensors(path: str | Path, *, option: str | None = None, expected: str) -> dict:
    """A safetensors file's tensors on the CPU, every failure one sentence."""
    from safetensors.torch import load_file

    path = check_file(path, option=option, expected=expected)
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types (SafetensorError, ...) for a bad header
        raise BadFileError(_not_safetensors(path, option, expected, exc)) from None


def safetensors_metadata(path: str | Path, *, option: str | None = None, expected: str) -> dict[str, str]:
    """A safetensors file's header metadata (``{}`` when it has none), without reading the tensors."""
    from safetensors import safe_open

    path = check_file(path, option=option, expected=expected)
    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except Exception as exc:
        raise BadFileError(_not_safetensors(path, option, expected, exc)) from None


def _not_safetensors(path: Path, option: str | None, expected: str, exc: BaseException) -> str:
    shown = where(option, path)
    kind = file_kind(path)
    if kind in ("zip", "pickle"):
        return (f"{shown} is a PyTorch pickle (torch.save), not a safetensors file; pass {expected} "
                f"(convert a trusted .pt/.pth with safetensors.torch.save_file).")
    if kind == "safetensors":
        return f"{shown} is a truncated or damaged safetensors file ({first_line(exc)}); pass a complete copy of {expected}."
    what = "a text file" if kind == "text" else "not a safetensors file"
    return f"{shown} is {what}; pass {expected}."


def read_json(path: str | Path, *, option: str | None = None, expected: str) -> Any:
    """A JSON file (a config beside weights), every failure one sentence."""
    path = check_file(path, option=option, expected=expected)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadFileError(f"{where(option, path)} is not valid JSON ({first_line(exc)}); pass {expected}.") from None
