"""The line a run prints before it trains: how long it will train (steps and epochs of the user's data), where
that length came from, and — when the user named none — how to change it."""
from __future__ import annotations

import math

from omegaconf import DictConfig

LENGTH_KEYS = ("trainer.max_steps", "trainer.max_epochs")
PRESET_GROUPS = ("experiment", "debug")


def _named(overrides: list[str]) -> tuple[str | None, str | None]:
    """``(key=value the user typed, preset option that sets lengths)`` from the command line's overrides."""
    typed = preset = None
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        if key in LENGTH_KEYS:
            typed = f"{key}={value}"
        elif key in PRESET_GROUPS and value not in ("", "null"):
            preset = f"{key}={value}"
    return typed, preset


def length_line(cfg: DictConfig, examples: int, steps_per_epoch: int, overrides: list[str]) -> str:
    """``Training for 300 steps (experiment=acestep_demo), about 33 epochs of 9 examples.`` and, with no length
    named, the keys that change it."""
    t = cfg.trainer
    max_steps, max_epochs = int(t.max_steps), int(t.max_epochs)
    spe = max(1, steps_per_epoch)
    by_epochs = max_epochs * spe if max_epochs >= 0 else math.inf
    steps = min(max_steps if max_steps >= 0 else math.inf, by_epochs)
    typed, preset = _named(overrides)
    source = typed or preset or "the default"
    of = f"{examples:,} example{'s' if examples != 1 else ''}"
    if steps == math.inf:
        line = (f"Training with no end (trainer.max_steps={max_steps}, trainer.max_epochs={max_epochs}): it runs until "
                f"stopped (Ctrl-C or SIGTERM saves a checkpoint and stops).")
    elif steps == by_epochs and by_epochs <= (max_steps if max_steps >= 0 else math.inf):
        line = (f"Training for {max_epochs:,} epoch{'s' if max_epochs != 1 else ''} of {of} = {steps:,} optimizer "
                f"steps ({source}).")
    else:
        epochs = steps / spe
        about = f"{epochs:,.0f}" if epochs >= 10 else f"{epochs:.1f}"
        line = f"Training for {steps:,} optimizer steps ({source}), about {about} epochs of {of}."
    if typed is None and preset is None:
        line += (" To train for another length, set trainer.max_steps=N or trainer.max_epochs=N (a run stopped "
                 "early keeps its checkpoint; resume=auto continues it).")
    return line
