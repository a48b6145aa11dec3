"""Compose the config outside Hydra's runner, to check every override and every sweep job up front.

Hydra reports a mistyped key or a bad group option with a terse message, and a multirun only after
earlier jobs ran. Here each override is tried, every problem is turned into one plain sentence
(with the nearest valid key), and each job of a sweep is composed and validated before any trains.
"""
from __future__ import annotations

import itertools
import re
from typing import Any

from omegaconf import DictConfig

from audiotrain.config.validate import ConfigError, all_keys, nearest, validate

CONF_MODULE = "audiotrain.conf"
CONFIG_NAME = "train"


NUMERIC_GROUPS = ("precision",)


def normalize_overrides(overrides: list[str]) -> list[str]:
    """Make what users naturally type parse the way they mean it.

    - ``precision=32`` (or ``precision=32,bf16-mixed``): Hydra reads 32 as a number and refuses it as a
      group option, so numeric options are quoted.
    - ``lora.alpha=${mul:2,${lora.r}}``: Hydra 1.3's override grammar fails on nested interpolations, so a
      value with ``${`` is quoted as a whole.
    """
    out = []
    for o in overrides:
        key, sep, value = o.partition("=")
        if not sep or value[:1] in ("'", '"'):
            out.append(o)
        elif "${" in value:
            out.append(f"{key}='{value}'")
        elif key.lstrip("+~") in NUMERIC_GROUPS:
            parts = [f"'{v}'" if v.replace(".", "", 1).isdigit() else v for v in value.split(",")]
            out.append(f"{key}={','.join(parts)}")
        else:
            out.append(o)
    return out


def _compose(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONF_MODULE, version_base="1.3"):
        return compose(config_name=CONFIG_NAME, overrides=normalize_overrides(overrides))


def _explain(override: str, exc: Exception, base: DictConfig | None) -> str:
    msg = str(exc)
    key, _, value = override.lstrip("+~").partition("=")
    m = re.search(r"Could not find '([^']+)'.*?Available options in '([^']+)':\s*(.*?)(?:\n\s*\n|Config search path|$)",
                  msg, re.S)
    if m:
        options = [x.strip() for x in m.group(3).split("\n") if x.strip()]
        guess = nearest(value, options)
        hint = f" (did you mean {key}={guess}?)" if guess else ""
        return f"{key}={value} is unknown: use one of {', '.join(options)}{hint}."
    if "not in struct" in msg or "Could not override" in msg or "Could not append" in msg:
        guess = nearest(key, all_keys(base)) if base is not None else None
        hint = f" — did you mean {guess}?" if guess else ""
        return f"'{key}' is not a config key{hint} (see `audiotrain --cfg job` for all keys)."
    first = msg.strip().splitlines()[0] if msg.strip() else type(exc).__name__
    return f"{override}: {first}"


def compose_checked(overrides: list[str]) -> tuple[DictConfig, list[str]]:
    """Compose with every good override; return the config and one sentence per bad override."""
    try:
        return _compose(overrides), []
    except Exception:
        pass
    good, problems = [], []
    groups = [o for o in overrides if "." not in o.partition("=")[0]]
    try:
        base = _compose([])
    except Exception as exc:  # the shipped config itself is broken: say so plainly
        raise ConfigError([f"the built-in configuration does not compose: {exc}"]) from None
    for o in groups + [o for o in overrides if o not in groups]:
        try:
            _compose(good + [o])
            good.append(o)
        except Exception as exc:
            problems.append(_explain(o, exc, base))
    return _compose(good), problems


def expand_sweep(overrides: list[str]) -> list[list[str]]:
    """The basic sweeper's cartesian product of ``a=1,2`` style overrides (one list per job)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(normalize_overrides(overrides))
    axes = []
    for o in parsed:
        key = o.get_key_element()
        if o.is_sweep_override():
            axes.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        else:
            axes.append([o.input_line])
    return [list(job) for job in itertools.product(*axes)]


def check_job(overrides: list[str], plugin_lookup: Any) -> DictConfig:
    """Compose and validate one job; raises ConfigError with every problem."""
    from omegaconf import OmegaConf

    cfg, problems = compose_checked(overrides)
    plugin = None
    name = OmegaConf.select(cfg, "model.name")
    try:
        plugin = plugin_lookup(name)
    except ValueError as exc:
        if not any(p.startswith("model=") for p in problems):  # a rejected model=... already says it
            problems.append(str(exc))
    try:
        names = plugin.lora_module_names(cfg) if plugin is not None and cfg.lora.get("target_modules") else None
        validate(cfg, plugin, module_names=names)
    except ConfigError as exc:
        problems.extend(exc.problems)
    except Exception as exc:  # interpolation errors and the like, still one sentence
        problems.append(str(exc).strip().splitlines()[0])
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)))
    return cfg
