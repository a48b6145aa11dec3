"""Manifest: the rows a reader found, before any audio is decoded.

A row is a plain dict with at least ``key`` (unique id) and ``audio_path`` (absolute path), plus
whatever text fields the plugin's readers add (e.g. ``tags``, ``lyrics``, ``speaker``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Manifest:
    rows: list[dict[str, Any]] = field(default_factory=list)
    source: str = ""
    format: str = ""

    def __len__(self) -> int:
        return len(self.rows)

    def repeated(self, n: int) -> "Manifest":
        """Rows repeated ``n`` times (ACE-Step's ``repeat_count`` epoch inflation)."""
        return Manifest(self.rows * max(1, int(n)), self.source, self.format)
