"""Wrong weights files for the weight-file tests (core and plugins): a malicious pickle whose ``__reduce__`` creates
a marker file, and the other kinds of wrong file a user passes (missing, empty, truncated, text, a folder)."""
from __future__ import annotations

from pathlib import Path

import torch

# the kinds of wrong file every option is tried with
KINDS = ("missing", "empty", "truncated", "text", "folder", "malicious")


class Payload:
    """Unpickling this creates ``marker``: proof that code from the file ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def malicious(path: Path, marker: Path) -> Path:
    """A torch.save file that looks like weights (tensors beside the payload) and runs code when fully unpickled."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"w": torch.zeros(2)}, "module": {"w": torch.zeros(2)}, "evil": Payload(marker)},
               str(path))
    return path


def wrong_file(kind: str, path: Path, good: Path | None = None, marker: Path | None = None) -> Path:
    """``path`` made into a wrong file of ``kind`` (``truncated``: the first half of ``good``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "missing":
        return path
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        data = Path(good).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "text":
        path.write_text("these are my notes, not weights\n")
    elif kind == "folder":
        path.mkdir()
    elif kind == "malicious":
        malicious(path, marker)
    else:
        raise ValueError(kind)
    return path


def assert_sentence(message: str, *names: object) -> None:
    """One sentence (no line break, no traceback) that names every one of ``names``."""
    assert "\n" not in message.strip() and "Traceback" not in message, message
    for n in names:
        assert str(n) in message, (n, message)


# what each kind's sentence says about the file
SAYS = {
    "missing": "no such",
    "empty": "is empty",
    "truncated": "truncated",
    "text": "text file",
    "folder": "folder",
    "malicious": "trust_pickle=true",
}
