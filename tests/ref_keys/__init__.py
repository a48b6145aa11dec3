"""The reference state-dict key lists of the released checkpoints (README.md here says what they hold).

They are facts - the names, shapes and sizes of the upstream models - kept in the repository so the layout
tests run on any clone. A missing list is an error, never a skip."""
from __future__ import annotations

import json
from pathlib import Path

FOLDER = Path(__file__).resolve().parent


def ref_keys(name: str) -> dict:
    """The parsed ``<name>.json`` of this folder, e.g. ``ref_keys("acestep_dcae")["keys"]`` (key -> shape)."""
    return json.loads((FOLDER / f"{name}.json").read_text())
