"""Manifest: the rows a reader found, before any audio is decoded.

A row is a plain dict with ``key`` (unique id), ``audio`` — its audio files by role, ``{role: absolute
path}`` (e.g. ``{"mix": ..., "vocal": ..., "accompaniment": ...}``; the roles are the plugin's
``audio_streams``) — plus whatever text fields the plugin's readers add (e.g. ``tags``, ``lyrics``,
``speaker``). A reader of one file per row may give it as ``audio_path`` instead: that is shorthand for
``audio: {"main": path}`` (``audiotrain.data.streams.MAIN``), and the core rewrites it so as it takes the
rows in (``resolve_manifest``, ``prepare_items``): past that point a row's files live only in ``audio``.
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
