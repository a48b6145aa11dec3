"""A command-line text input that may name a file: ``--lyrics "la la"`` or ``--lyrics @lyrics.txt``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from audiotrain.errors import UserError


def text_or_file(value: Any, option: str) -> str | None:
    """``value`` as text, ``@FILE`` read from a UTF-8 file; None when not given. A value that is not text or a file
    that cannot be read is one sentence naming ``option`` (e.g. ``--lyrics``)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise UserError(f"{option} {value!r} is not text: pass the text, or @FILE to read it from a file.")
    if not value.startswith("@"):
        return value
    path = Path(value[1:]).expanduser()
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{option} {value} cannot be read ({type(exc).__name__}): give @FILE of an existing UTF-8 "
                        f"text file, or the text itself.") from None
