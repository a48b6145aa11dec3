"""Reading the small text files that sit beside audio (prompts, lyrics, transcripts) and the lists that name audio,
for every reader: UTF-8 (with or without a BOM) and UTF-16/32 with their BOM are decoded; anything else, and a
file too large to be what it claims, is refused with a reason naming the encoding or the size."""
from __future__ import annotations

import codecs
import stat
from pathlib import Path

from audiotrain.data.report import BadInputReport
from audiotrain.errors import UserError

#: a text file beside audio (a prompt, lyrics, a transcript) or one line of a list is at most this many bytes
MAX_TEXT_BYTES = 1 << 20

_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))  # UTF-32 LE's BOM starts like UTF-16 LE's


class TextError(ValueError):
    """A text file cannot be used; the message is the reason (a sentence fragment after the file's name)."""


def bom_encoding(data: bytes) -> str | None:
    """The codec a byte-order mark at the start of ``data`` names, else None."""
    return next((enc for bom, enc in _BOMS if data.startswith(bom)), None)


def megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def decode_text(data: bytes) -> str:
    """``data`` as text: by its BOM (UTF-8/16/32), else strict UTF-8; :class:`TextError` says why not."""
    enc = bom_encoding(data)
    try:
        return data.decode(enc or "utf-8")
    except UnicodeDecodeError as exc:
        if enc:
            raise TextError(f"is not valid {enc.upper().replace('-SIG', '')} text although it starts with that "
                            f"encoding's byte-order mark (bad bytes at offset {exc.start}); save it as UTF-8") from None
        hint = " (its NUL bytes suggest UTF-16 without a byte-order mark)" if b"\x00" in data else ""
        raise TextError(f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}){hint}; "
                        "save it as UTF-8") from None


def read_text(path: Path, limit: int = MAX_TEXT_BYTES) -> str:
    """A text file's content (see :func:`decode_text`); :class:`TextError` when unreadable, not text or too large."""
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise TextError("is not a regular file (a folder or a pipe)")
        size = st.st_size
        if size > limit:
            raise TextError(f"is {megabytes(size)} of text, more than the {megabytes(limit)} such a file may hold: "
                            "is it the right file?")
        data = path.read_bytes()
    except OSError as exc:
        raise TextError(f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    return decode_text(data)


def read_sidecar(path: Path, report: BadInputReport, what: str = "", collapse: bool = False) -> str | None:
    """The file's text (stripped; ``collapse`` joins all whitespace into single spaces), or None after reporting
    ``path`` with the reason (not UTF-8, too large, unreadable) — the caller then skips the example."""
    try:
        text = read_text(path)
    except TextError as exc:
        report.add(path, f"{what}{exc}")
        return None
    return " ".join(text.split()) if collapse else text.strip()


def list_lines(listfile: Path, holds: str) -> list[tuple[int, str | None, str]]:
    """``(line number, text, "")`` per line, or ``(n, None, reason)`` for a line that is not UTF-8 or too long.
    A list with a BOM (UTF-8/16/32) is decoded whole; without one each line must be UTF-8 on its own, so one
    mis-encoded line costs that line only."""
    try:
        data = listfile.read_bytes()
    except OSError as exc:
        raise UserError(f"{listfile} cannot be read ({exc.strerror or type(exc).__name__}): check the path and its "
                        f"permissions.") from None
    if bom_encoding(data):
        try:
            raw = [line.encode("utf-8") for line in decode_text(data).lstrip("\ufeff").splitlines()]
        except TextError as exc:
            raise UserError(f"{listfile} {exc}.") from None
    else:
        raw = [line.rstrip(b"\r") for line in data.split(b"\n")]
    out: list[tuple[int, str | None, str]] = []
    for n, line in enumerate(raw, start=1):
        if len(line) > MAX_TEXT_BYTES:
            out.append((n, None, f"is {megabytes(len(line))} long, more than the {megabytes(MAX_TEXT_BYTES)} a line "
                                 f"({holds}) may hold: is this the right file?"))
            continue
        try:
            out.append((n, line.decode("utf-8"), ""))
        except UnicodeDecodeError as exc:
            out.append((n, None, f"is not UTF-8 text (byte 0x{line[exc.start]:02x} at offset {exc.start}); "
                                 "save the list as UTF-8"))
    return out
