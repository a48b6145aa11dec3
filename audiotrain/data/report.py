"""The bad-input report: every skipped file with its reason, printed, saved and logged."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from audiotrain.atomic_write import atomic_write_text


@dataclass
class Skipped:
    path: str
    reason: str


@dataclass
class BadInputReport:
    """Collects skipped inputs. ``add`` never raises; ``render`` is what a person reads."""

    source: str = ""
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)
    usable: int = 0

    def add(self, path: str | Path, reason: str) -> None:
        self.skipped.append(Skipped(str(path), reason))

    def note(self, path: str | Path, text: str) -> None:
        """Something a user should know about a file that was kept (e.g. missing lyrics → empty)."""
        self.notes.append((str(path), text))

    def live_notes(self) -> list[str]:
        """Notes about files that were not skipped after all."""
        gone = {s.path for s in self.skipped}
        return [f"{Path(p).name}: {t}" for p, t in self.notes if p not in gone]

    def __len__(self) -> int:
        return len(self.skipped)

    def render(self) -> str:
        lines = [f"Data: {self.source} — {self.usable} usable, {len(self.skipped)} skipped"]
        for s in self.skipped:
            lines.append(f"  SKIPPED {s.path}: {s.reason}")
        for n in self.live_notes():
            lines.append(f"  note: {n}")
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
