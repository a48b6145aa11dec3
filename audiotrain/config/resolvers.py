"""OmegaConf resolvers audiotrain configs use: ``${mul:2,${lora.r}}``, ``${cwd:}``."""
from __future__ import annotations

import os

from omegaconf import OmegaConf


def register() -> None:
    if not OmegaConf.has_resolver("mul"):
        OmegaConf.register_new_resolver("mul", lambda *xs: _prod(xs))
    if not OmegaConf.has_resolver("cwd"):
        OmegaConf.register_new_resolver("cwd", lambda: os.getcwd())


def _prod(xs):
    out = 1
    for x in xs:
        out = out * x
    return out
