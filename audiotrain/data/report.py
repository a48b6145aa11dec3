"""The bad-input report: every skipped file with its reason, printed, saved and logged.

``render`` is the full list (the saved ``bad_inputs.txt``); ``summary`` is what the console shows during a run:
the full list while it is short, else per kind of reason (``Skipped.kind``: the reason without what names one
file, line or number) the count and the first few, with where the full list is."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from audiotrain.atomic_write import atomic_write_text

#: entries of one kind the console shows before "... and N more"
SHOWN_PER_KIND = 3

_WHERE = re.compile(r"^(?:line \d+|row \d+(?: \(.*?\))?|\w+ stream)$")  # "line 5", "row 3 (song_01)", "mix stream"
_IN_PARENS = re.compile(r"(?<=[\s(])/[^()]*(?=\))")  # "(paths are relative to /my data)": spaces too
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_PATHLIKE = re.compile(r"(?<![\w.\-])(?:[^\s/\\:;,()\[\]|]*[/\\][^\s:;,()\[\]|]*"  # a/b, .mp3/.wav
                       r"|[^\s/\\:;,()\[\]|]*\.[A-Za-z][A-Za-z0-9]{0,4})"         # x_cap.txt, .m4a
                       r"(?=$|[\s,;:)\]])")
_NUMBER = re.compile(r"(?<![\w.\-])(?:0x[0-9a-fA-F]+|\d+(?:\.\d+)?)(?!\w)")


def reason_kind(reason: str) -> str:
    """A reason's kind: its first part (up to ": ") that says what is wrong, without the file names, paths, quoted
    names and numbers that differ from one file to the next. ``"line 5: gone.wav: audio file gone.wav not found"``
    → ``"audio file … not found"``; ``"duplicate of b.flac (same name, another format)"`` → ``"duplicate of …
    (same name, another format)"``."""
    for part in reason.split(": "):
        if _WHERE.match(part):
            continue
        kind = _NUMBER.sub("N", _PATHLIKE.sub("…", _QUOTED.sub("'…'", _IN_PARENS.sub("…", part)))).strip()
        kind = kind[:-2] if kind.endswith(" …") else kind  # "no tags file …" (x_prompt.txt) → "no tags file"
        if kind.strip("… ") and kind != "…":
            return kind
    return reason


@dataclass
class Skipped:
    path: str
    reason: str
    #: what files skipped for the same reason share ("tags file without audio"); the console groups by it
    kind: str = ""


@dataclass
class BadInputReport:
    """Collects skipped inputs. ``add`` never raises; ``render`` (all) and ``summary`` (a few per kind) are what a
    person reads."""

    source: str = ""
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)
    usable: int = 0

    def add(self, path: str | Path, reason: str, kind: str | None = None) -> None:
        """Skip ``path`` for ``reason``; ``kind`` (default: :func:`reason_kind`) groups it with its like."""
        self.skipped.append(Skipped(str(path), reason, kind or reason_kind(reason)))

    def note(self, path: str | Path, text: str) -> None:
        """Something a user should know about a file that was kept (e.g. missing lyrics → empty)."""
        self.notes.append((str(path), text))

    def live_notes(self) -> list[str]:
        """Notes about files that were not skipped after all."""
        gone = {s.path for s in self.skipped}
        return [f"{Path(p).name}: {t}" for p, t in self.notes if p not in gone]

    def __len__(self) -> int:
        return len(self.skipped)

    def _head(self) -> str:
        return f"Data: {self.source} — {self.usable} usable, {len(self.skipped)} skipped"

    def render(self) -> str:
        lines = [self._head()]
        for s in self.skipped:
            lines.append(f"  SKIPPED {s.path}: {s.reason}")
        for n in self.live_notes():
            lines.append(f"  note: {n}")
        return "\n".join(lines)

    def summary(self, full_list: str | Path | None = None, shown: int = SHOWN_PER_KIND) -> str:
        """What the console shows: :meth:`render` while no kind of reason (or of note) has more than ``shown``
        entries; else per kind its count and first ``shown`` entries, and where the full list is (``full_list``)."""
        skipped = _group((s.kind or reason_kind(s.reason), f"SKIPPED {s.path}: {s.reason}") for s in self.skipped)
        notes = _group((reason_kind(n.split(": ", 1)[-1]), f"note: {n}") for n in self.live_notes())
        if all(len(v) <= shown for v in (*skipped.values(), *notes.values())):
            return self.render()
        lines = [self._head() + (f"; the full list: {full_list}" if full_list else "")]
        for groups, what in ((skipped, "skipped"), (notes, "noted")):
            for kind, entries in groups.items():
                lines.append(f"  {len(entries)} {what}: {kind}")
                lines += [f"    {e}" for e in entries[:shown]]
                if len(entries) > shown:
                    lines.append(f"    ... and {len(entries) - shown} more")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "usable": self.usable,
            "skipped": [s.__dict__ for s in self.skipped],
            "notes": self.live_notes(),
        }

    def save(self, directory: str | Path, stem: str = "bad_inputs") -> list[Path]:
        """``<stem>.txt`` (what ``render`` prints) and ``<stem>.json`` in ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        txt, js = d / f"{stem}.txt", d / f"{stem}.json"
        # a file name that is not UTF-8 (bytes from another system) is written as \udcxx escapes, not a crash
        atomic_write_text(txt, self.render() + "\n", errors="backslashreplace")
        atomic_write_text(js, json.dumps(self.to_dict(), indent=2, ensure_ascii=False), errors="backslashreplace")
        return [txt, js]


def _group(pairs) -> dict[str, list[str]]:
    """``{kind: [entry, ...]}``, the most common kind first (on a tie, the one that appears first)."""
    out: dict[str, list[str]] = {}
    for kind, entry in pairs:
        out.setdefault(kind, []).append(entry)
    return dict(sorted(out.items(), key=lambda kv: -len(kv[1])))
