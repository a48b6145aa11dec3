"""A group option the user names is the option that runs; a key the user names wins over every preset.

Every installed plugin is composed with every option of every shared group (options found in the config
search path, plugin-added ones included), without and with each debug/experiment preset, and what would be
BUILT from the composed config is compared with what the named option's own file says: the lr curve of
``schedule``, the optimizer class, Lightning's precision, the strategy type, the LoRA settings. The plugin's
and the presets' tuned values may only touch keys that every option of the group has (so no option is ever
half-replaced), and apply unless the user names the key.
"""
from __future__ import annotations

import copy
import math
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from audiotrain.config.compose import CONF_MODULE, CONFIG_NAME, check_job, expand_sweep, normalize_overrides
from audiotrain.plugins import registry
from tests.conftest import compose as _register  # registers resolvers and plugin configs

GROUPS = ("scheduler", "optimizer", "precision", "backend", "lora")
PRESET_GROUPS = ("experiment", "debug")  # composed after model=, in this order (conf/train.yaml)
TOTAL, PER_EPOCH, STEPS = 240, 20, range(0, 260, 3)


def _loader():
    """Hydra initialised on the config module and primary config the CLI composes (again after another test
    cleared it); its config loader lists group options, ConfigStore ones included."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    gh = GlobalHydra.instance()
    if not gh.is_initialized():
        _register([])  # resolvers and the plugins' options
        initialize_config_module(config_module=CONF_MODULE, version_base="1.3")
    return gh.config_loader()


@lru_cache(maxsize=None)
def composed(*overrides: str) -> DictConfig:
    from hydra import compose

    _loader()
    return compose(config_name=CONFIG_NAME, overrides=normalize_overrides(list(overrides)))


@pytest.fixture(scope="module", autouse=True)
def _clear_hydra_afterwards():
    yield
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()


@lru_cache(maxsize=None)
def options(group: str) -> list[str]:
    return sorted(_loader().get_group_options(group))


# ---- what the files say -------------------------------------------------------------------------------

CONF = Path(str(files(CONF_MODULE)))


@lru_cache(maxsize=None)
def _file(path: Path) -> dict:
    return OmegaConf.to_container(OmegaConf.load(path))


def _source(group: str, option: str) -> dict:
    """An option's file as written: a plugin's (global package) from its config_options, a core one from
    conf/ (a shared group's option packaged under its group, a preset's global)."""
    for plugin in registry.discover().values():
        path = plugin.config_options().get((group, option))
        if path is not None:
            return copy.deepcopy(_file(path))
    node = copy.deepcopy(_file(CONF / group / f"{option}.yaml"))
    return {group: node} if group in GROUPS else node


def chosen_by(source: dict, group: str) -> str | None:
    """The option a config's defaults list picks for ``group`` (``- override /group: option``)."""
    for entry in source.get("defaults") or []:
        if isinstance(entry, dict):
            for key, value in entry.items():
                if key.removeprefix("override ").strip().strip("/") == group and key.startswith("override"):
                    return str(value)
    return None


def primary_default(group: str) -> str:
    for entry in _file(CONF / f"{CONFIG_NAME}.yaml")["defaults"]:
        if isinstance(entry, dict) and group in entry:
            return str(entry[group])
    raise AssertionError(f"conf/{CONFIG_NAME}.yaml has no default for {group}")


def own(group: str, option: str) -> dict:
    """The option's own values, from its file."""
    return {k: v for k, v in _source(group, option)[group].items() if k != "defaults"}


def preset_sources(plugin: str, presets: tuple[str, ...]) -> list[dict]:
    """The model option, then the presets, in composition order."""
    ordered = sorted(presets, key=lambda p: PRESET_GROUPS.index(p.partition("=")[0]))
    return [_source("model", plugin)] + [_source(*p.split("=", 1)) for p in ordered]


def expected(group: str, option: str | None, plugin: str, presets: tuple[str, ...],
             named: dict | None = None) -> tuple[str, dict]:
    """(option, values) that must run: the user's option, else the last preset's, else the plugin's, else
    conf/train.yaml's; its own values, then each preset's tuned keys in order, then the keys the user named."""
    sources = preset_sources(plugin, presets)
    if option is None:
        option = primary_default(group)
        for src in sources:
            option = chosen_by(src, group) or option
    values = own(group, option)
    for src in sources:
        values.update(src.get(group) or {})
    values.update(named or {})
    return option, values


# ---- what gets built ----------------------------------------------------------------------------------

def reference_curve(s: dict, total: int, per_epoch: int, base_lr: float) -> list[float]:
    """Each scheduler's own formula, written here from its config comment (independently of optim.py)."""
    w = int(s.get("warmup_steps") or 0)
    out = []
    for t in STEPS:
        if s["name"] == "warmup_linear":
            f = t / w if t < w else max(0.0, 1 - (t - w) / max(1, total - w))
        elif s["name"] == "multistep":  # the warm-up multiplies the milestone decay
            marks = s["milestones"] or [e * per_epoch for e in s["milestones_epochs"]]
            f = (1.0 if t >= w else (t + 1) / w) * float(s["gamma"]) ** sum(t >= m for m in marks)
        elif w and t < w:
            f = (t + 1) / w
        elif s["name"] == "constant":
            f = 1.0
        elif s["name"] == "cosine":
            m, p = float(s["min_lr_ratio"]), min(1.0, (t - w) / max(1, total - w))
            f = m + (1 - m) * (1 + math.cos(math.pi * p)) / 2
        elif s["name"] == "cosine_restarts":
            r = int(s["restarts"])
            period = int(s["period_steps"] or (total - w) // r)
            k, u = min((t - w) // period, r), t - w
            peaks = [1.0] + [(r - j - 1) / r for j in range(r)]
            if r >= 2:
                peaks[r] = peaks[r - 1] / 2
            m = float(s["eta_min"]) / base_lr
            f = m + (peaks[k] - m) * (1 + math.cos(math.pi * min(u - k * period, period) / period)) / 2
        else:
            raise AssertionError(f"scheduler={s['name']} has no reference formula in this test: add it")
        out.append(f)
    return out


def built_curve(cfg: DictConfig) -> list[float]:
    from audiotrain.train.optim import schedule

    f = schedule(cfg.scheduler, TOTAL, PER_EPOCH, float(cfg.optimizer.lr))
    return [f(t) for t in STEPS]


OPTIMIZER_CLASSES = {"adamw": "torch.optim.adamw.AdamW", "adamw8bit": "bitsandbytes.optim.adamw.AdamW8bit"}
LIGHTNING_PRECISION = {"32": "32-true", "bf16-mixed": "bf16-mixed", "16-mixed": "16-mixed"}
STRATEGIES = {"local": "str", "ddp": "DDPStrategy", "deepspeed": "CPUDeepSpeedStrategy"}


def check_built(group: str, cfg: DictConfig, option: str, values: dict) -> None:
    if group == "scheduler":
        assert cfg.scheduler.name == option
        ref = reference_curve(values, TOTAL, PER_EPOCH, float(cfg.optimizer.lr))
        assert built_curve(cfg) == pytest.approx(ref, rel=1e-9, abs=1e-12)
    elif group == "optimizer":
        import torch

        from audiotrain.train.optim import build_optimizer

        opt = build_optimizer(cfg.optimizer, [torch.nn.Parameter(torch.zeros(4))])
        # the class named, or audiotrain's subclass of it (AdamW8bit with 32-bit embedding state)
        assert OPTIMIZER_CLASSES[option] in {f"{c.__module__}.{c.__name__}" for c in type(opt).__mro__[:2]}
        pg = opt.param_groups[0]
        assert (pg["lr"], *pg["betas"], pg["eps"], pg["weight_decay"]) == pytest.approx(
            (values["lr"], *values["betas"], values["eps"], values["weight_decay"]))
    elif group == "precision":
        from audiotrain.config.validate import lightning_precision

        assert lightning_precision(cfg.precision.name) == LIGHTNING_PRECISION[option]
    elif group == "backend":
        from audiotrain.train.backend import strategy

        built = strategy(cfg, "cpu")
        assert type(built).__name__ == STRATEGIES[option]
        if option == "deepspeed":
            assert built.config["zero_optimization"]["stage"] == values["stage"]
    elif group == "lora":
        from audiotrain.lora.from_config import settings_from_cfg

        s = settings_from_cfg(cfg.lora, ["plugin.default.target"])
        if not values["enabled"]:
            assert s is None
        else:
            assert (s.r, s.alpha, s.dropout, s.use_rslora) == (values["r"], values["alpha"], values["dropout"],
                                                               values["use_rslora"])
            assert s.target_modules == (values["target_modules"] or ["plugin.default.target"])


# ---- the combinations ---------------------------------------------------------------------------------

def preset_sets(plugin: str) -> list[tuple[str, ...]]:
    """No preset, each debug preset, each experiment meant for this plugin (its own or a core one), and each
    such experiment with each debug preset."""
    mine = set(registry.discover()[plugin].config_options())
    foreign = {k for p in registry.discover().values() for k in p.config_options()} - mine
    exps = [f"experiment={e}" for e in options("experiment") if ("experiment", e) not in foreign]
    debugs = [f"debug={d}" for d in options("debug")]
    return [(), *((d,) for d in debugs), *((e,) for e in exps), *((e, d) for e in exps for d in debugs)]


def combos():
    for plugin in sorted(registry.discover()):
        for presets in preset_sets(plugin):
            yield plugin, presets


COMBOS = list(combos())


def _id(c):
    return " ".join((f"model={c[0]}",) + c[1])


def test_every_group_and_preset_is_discovered():
    assert set(registry.discover()) and all(options(g) for g in GROUPS)
    for plugin in registry.discover().values():  # plugin-added options are listed too (lora=valle, ...)
        added = {(g, o) for g, o in plugin.config_options() if g in GROUPS}
        assert all(o in options(g) for g, o in added), (plugin.name, added)
    assert any("experiment=" in " ".join(p) for _, p in COMBOS) and any("debug=" in " ".join(p) for _, p in COMBOS)


def test_presets_tune_only_keys_every_option_of_the_group_has():
    """A plugin or preset that set an option-specific key (min_lr_ratio, milestones) would leave it behind
    on every other option; choosing an option is a defaults-list override instead."""
    sources = {(g, o): _source(g, o) for g in ("model", *PRESET_GROUPS) for o in options(g)}
    for (g, o), src in sources.items():
        for group in GROUPS:
            shared = set.intersection(*(set(own(group, opt)) for opt in options(group)))
            tuned = set(src.get(group) or {})
            assert tuned <= shared, f"{g}={o} sets {group}.{sorted(tuned - shared)}, which not every {group} has"
            assert "name" not in tuned, f"{g}={o} picks {group} by its name key: use '- override /{group}: ...'"


def choices(k: int | None) -> dict[str, str | None]:
    """The k-th option of every group at once (the groups compose independently, so max-options composes
    cover every option of every group); None: no group named."""
    return {g: None if k is None else options(g)[k % len(options(g))] for g in GROUPS}


def rounds() -> range:
    return range(max(len(options(g)) for g in GROUPS))


NAMED = {"scheduler": {"warmup_steps": 7}, "optimizer": {"lr": 0.0123, "eps": 3e-6},
         "lora": {"dropout": 0.05, "r": 12}, "precision": {}, "backend": {}}


def check_combo(plugin: str, presets: tuple[str, ...], chosen: dict[str, str | None], named: dict) -> None:
    picked = [f"{g}={o}" for g, o in chosen.items() if o is not None]
    keys = [f"{g}.{k}={v}" for g, kv in named.items() for k, v in kv.items()]
    cfg = composed(f"model={plugin}", *presets, *picked, *keys)
    for group in GROUPS:
        option, values = expected(group, chosen[group], plugin, presets, named.get(group))
        assert chosen[group] in (None, option)
        assert OmegaConf.to_container(cfg[group], resolve=True) == values, (group, option, picked, keys)
        check_built(group, cfg, option, values)
    if named.get("scheduler"):
        assert built_curve(cfg)[0] == pytest.approx(0.0 if cfg.scheduler.name == "warmup_linear" else 1 / 7)


@pytest.mark.parametrize("combo", COMBOS, ids=_id)
def test_the_named_option_is_the_one_built(combo):
    for k in rounds():
        check_combo(*combo, choices(k), {})


@pytest.mark.parametrize("combo", COMBOS, ids=_id)
def test_a_named_key_beats_plugin_and_presets(combo):
    for k in [None, *rounds()]:
        check_combo(*combo, choices(k), NAMED)


@pytest.mark.parametrize("combo", COMBOS, ids=_id)
def test_the_plugins_and_presets_own_choices_apply_when_nothing_is_named(combo):
    """With no group and no key named, each group is the last preset's option (else the plugin's, else
    conf/train.yaml's), carrying every value the plugin and the presets tune."""
    check_combo(*combo, choices(None), {})
    plugin, presets = combo
    cfg = composed(f"model={plugin}", *presets)
    for group in GROUPS:
        tuned: dict = {}
        for src in preset_sources(plugin, presets):  # the last one to tune a key sets it
            tuned.update(src.get(group) or {})
        for key, v in tuned.items():
            assert cfg[group][key] == v, f"{_id(combo)} tunes {group}.{key}={v} but {cfg[group][key]} composes"


def test_valle_and_acestep_tuned_values():
    """The values the two shipped plugins' trainers use (their YAML / trainer.py defaults)."""
    v = composed("model=valle", "scheduler=cosine")
    assert (v.optimizer.lr, list(v.optimizer.betas), v.optimizer.eps) == (3.25e-4, [0.9, 0.96], 1e-7)
    assert (v.scheduler.name, v.scheduler.warmup_steps, v.scheduler.min_lr_ratio) == ("cosine", 100, 0.0)
    assert composed("model=valle").scheduler == {"name": "constant", "warmup_steps": 100}
    assert "milestones" in composed("model=valle", "scheduler=multistep").scheduler
    a = composed("model=acestep", "scheduler=constant")
    assert (list(a.optimizer.betas), a.scheduler.name, a.scheduler.warmup_steps) == ([0.8, 0.9], "constant", 10)
    assert composed("model=acestep").scheduler.name == "warmup_linear"
    d = composed("model=acestep", "experiment=acestep_demo", "lora=acestep_zh_rap")
    assert (d.lora.r, d.lora.use_rslora, d.optimizer.lr) == (256, True, 3e-3)
    o = composed("model=valle", "debug=overfit", "scheduler=cosine", "lora=default", "scheduler.warmup_steps=7")
    assert (o.scheduler.name, o.scheduler.warmup_steps, o.lora.enabled, o.optimizer.lr) == ("cosine", 7, True, 3e-3)


def test_mlflow_params_show_the_scheduler_that_runs():
    from audiotrain.tracking.mlflow_store import flatten

    for option in options("scheduler"):
        params = flatten(OmegaConf.to_container(composed("model=valle", f"scheduler={option}"), resolve=True))
        mine = {k.split(".", 1)[1] for k in params if k.startswith("scheduler.")}
        assert params["scheduler.name"] == option and mine == set(own("scheduler", option))


def test_cosine_restarts_warms_up_then_cycles():
    from audiotrain.train.optim import schedule

    cfg = OmegaConf.create({"name": "cosine_restarts", "warmup_steps": 10, "restarts": 2, "period_steps": 20,
                            "eta_min": 0.0})
    f = schedule(cfg, 50, None, 1.0)
    assert [f(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert [f(s) for s in (10, 20, 30, 40)] == pytest.approx([1.0, 0.5, 0.5, 0.25])
    assert f(29) < 0.01 and f(49) < 0.01  # each cycle ends at eta_min before its restart
    none = schedule(OmegaConf.create({**cfg, "warmup_steps": 0}), 50, None, 1.0)
    assert none(0) == pytest.approx(1.0) and none(10) == pytest.approx(0.5)


def test_a_scheduler_sweep_on_valle_runs_two_different_jobs(tmp_path):
    jobs = expand_sweep(["model=valle", f"data={tmp_path}", "model.preset=tiny", "scheduler=constant,cosine"])
    assert len(jobs) == 2
    cfgs = [check_job(job, registry.get) for job in jobs]  # the CLI's own check of each sweep job
    assert [c.scheduler.name for c in cfgs] == ["constant", "cosine"]
    assert "min_lr_ratio" not in cfgs[0].scheduler and cfgs[1].scheduler.min_lr_ratio == 0.0
    assert OmegaConf.to_container(cfgs[0].scheduler) != OmegaConf.to_container(cfgs[1].scheduler)
    assert built_curve(cfgs[0])[-1] == 1.0 and built_curve(cfgs[1])[-1] == pytest.approx(0.0)
