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


def unquote(override: str) -> str:
    """The value as the user meant it: ``precision='32'`` (quoted by ``normalize_overrides``) → ``precision=32``."""
    key, sep, value = override.partition("=")
    if sep and len(value) > 1 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return f"{key}{sep}{value}"


def _compose(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONF_MODULE, version_base="1.3"):
        return compose(config_name=CONFIG_NAME, overrides=normalize_overrides(overrides))


# Hydra plugins our launcher / search presets need: config name → (package, audiotrain extra or None)
HYDRA_PLUGINS = {"hydra/launcher/joblib": ("hydra-joblib-launcher", None),
                 "hydra/launcher/submitit_slurm": ("hydra-submitit-launcher", "slurm"),
                 "hydra/launcher/ray": ("hydra-ray-launcher", "ray"),
                 "hydra/sweeper/optuna": ("hydra-optuna-sweeper", None)}


def _explain(override: str, exc: Exception, base: DictConfig | None) -> str:
    msg = str(exc)
    key, _, value = override.lstrip("+~").partition("=")
    for name, (package, extra) in HYDRA_PLUGINS.items():
        if f"'{name}'" in msg:
            how = f"pip install 'audiotrain[{extra}]'" if extra else f"pip install {package} (a pinned dependency: " \
                  f"reinstall audiotrain)"
            return f"{key}={value} needs the Hydra plugin {package}, which is not installed: {how}."
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


SEARCH_PARAMS = "hydra.sweeper.params."


def _values(o, spec: str) -> list[str]:
    """The values a parsed override stands for: ``a=1,2`` and ``choice``/``range`` expand; an ``interval`` (a
    search sweeper samples inside it) gives its two ends."""
    from hydra.core.override_parser.types import IntervalSweep

    value = o.value()
    if isinstance(value, IntervalSweep):
        ints = not any(c in spec.replace("interval", "") for c in ".eE")
        return [str(int(x)) if ints else repr(float(x)) for x in (value.start, value.end)]
    if o.is_sweep_override():
        return list(o.sweep_string_iterator())
    return [o.input_line.partition("=")[2]]


def expand_sweep(overrides: list[str]) -> list[list[str]]:
    """The basic sweeper's cartesian product of ``a=1,2`` style overrides (one list per job); an Optuna-style
    ``interval(lo, hi)`` contributes its ends, ``hydra.sweeper.params.K=SPEC`` counts as an axis ``K``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    axes = []
    for line in normalize_overrides(overrides):
        key, _, spec = line.partition("=")
        if key.startswith(SEARCH_PARAMS):
            key, line = key[len(SEARCH_PARAMS):], f"{key[len(SEARCH_PARAMS):]}={spec.strip(chr(39) + chr(34))}"
        o = parser.parse_override(line)
        axes.append([f"{o.get_key_element()}={v}" for v in _values(o, spec)] if o.is_sweep_override() else [line])
    return [list(job) for job in itertools.product(*axes)]


def search_space_jobs(overrides: list[str]) -> list[list[str]]:
    """Jobs covering a search sweeper's space from its config (``hydra.sweeper.params``, e.g.
    ``hparams_search=lora_optuna``): every choice and both ends of every interval, one axis at a time, so a bad
    value fails before any trial."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    plain = [o for o in overrides if not o.startswith(SEARCH_PARAMS) and "choice(" not in o and "interval(" not in o]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module=CONF_MODULE, version_base="1.3"):
            cfg = compose(config_name=CONFIG_NAME, overrides=normalize_overrides(plain), return_hydra_config=True)
        params = OmegaConf.select(cfg, "hydra.sweeper.params")
    except Exception:  # the base job's own check reports why it does not compose
        return []
    if not params:
        return []
    given = {o.partition("=")[0].removeprefix(SEARCH_PARAMS) for o in overrides}
    parser = OverridesParser.create()
    jobs = []
    for key, spec in OmegaConf.to_container(params).items():
        if key in given:  # the command line replaced this axis (checked with the sweep's own jobs)
            continue
        o = parser.parse_override(f"{key}={spec}")
        jobs += [[*plain, f"{key}={v}"] for v in _values(o, str(spec))]
    return jobs


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
