"""A frozen component a backbone builds on first use (the decoder or codec that renders samples)."""
from __future__ import annotations

from typing import Any, Callable


class Lazy:
    """Holds ``factory``'s result once asked for it. A plain object, not an ``nn.Module`` attribute, so the
    component never joins the backbone's state dict, checkpoints, parameter counts or optimizer."""

    def __init__(self, factory: Callable[[], Any] | None, what: str):
        self._factory = factory
        self._what = what
        self._value: Any = None

    def get(self) -> Any:
        if self._value is None:
            if self._factory is None:
                raise RuntimeError(f"this backbone was built without {self._what}")
            self._value = self._factory()
        return self._value
