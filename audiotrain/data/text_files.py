"""Reading the small text files that sit beside audio (prompts, lyrics, transcripts), for every reader."""
from __future__ import annotations

from pathlib import Path

from audiotrain.data.report import BadInputReport


def read_sidecar(path: Path, report: BadInputReport, what: str = "", collapse: bool = False) -> str | None:
    """The file's text (UTF-8, BOM tolerated, stripped; ``collapse`` joins all whitespace into single spaces),
    or None after reporting ``path`` as unreadable — the caller then skips the example."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (UnicodeDecodeError, OSError) as exc:
        report.add(path, f"{what}cannot be read as UTF-8 text ({type(exc).__name__})")
        return None
    return " ".join(text.split()) if collapse else text.strip()
