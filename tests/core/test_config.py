"""Config composition and validation: every problem at once, in plain words."""
from __future__ import annotations

import json

import pytest

from audiotrain.config.compose import check_job, compose_checked, expand_sweep
from audiotrain.config.validate import ConfigError
from audiotrain.plugins import registry
from tests.conftest import compose  # noqa: F401  (registers resolvers and plugin configs)


@pytest.fixture(autouse=True)
def _registered():
    compose([])


def test_plugin_found_through_its_entry_point():
    plugins = registry.discover()
    assert "acestep" in plugins and plugins["acestep"].name == "acestep"
    names = ", ".join(sorted(plugins))
    assert {"acestep", "valle", "songgen"} <= set(plugins)
    with pytest.raises(registry.PluginError, match=f"installed plugins are {names}"):
        registry.get("nosuch")


def test_acestep_defaults_come_from_the_plugin():
    cfg = compose(["model=acestep"])
    assert list(cfg.optimizer.betas) == [0.8, 0.9] and cfg.optimizer.lr == 1e-4
    assert cfg.scheduler.name == "warmup_linear" and cfg.scheduler.warmup_steps == 10
    assert cfg.trainer.gradient_clip_val == 0.5 and cfg.trainer.every_n_train_steps == 2000
    assert cfg.exp_name == "acestep" and cfg.model.shift == 3.0  # no data: the plugin's name
    assert compose(["model=acestep", "optimizer.betas=[0.9,0.99]"]).optimizer.betas == [0.9, 0.99]


def test_all_problems_reported_at_once(song_dir):
    with pytest.raises(ConfigError) as e:
        check_job(["model=acestep", "model.preset=tiny", "data=/no/such/dir", "lora.r=-3", "precision=64",
                   "lora.rr=4", "optimizer.lr=0"], registry.get)
    problems = e.value.problems
    text = "\n".join(problems)
    assert "precision=64 is unknown: use one of" in text and "bf16-mixed" in text
    assert "'lora.rr' is not a config key — did you mean lora.r?" in text
    assert "data=/no/such/dir does not exist" in text
    assert "lora.r=-3 is not a positive integer" in text
    assert "optimizer.lr=0 must be a positive number" in text
    assert len(problems) == 5


def test_unknown_target_module_lists_real_names(song_dir):
    with pytest.raises(ConfigError) as e:
        check_job(["model=acestep", "model.preset=tiny", f"data={song_dir}", "lora.target_modules=[to_q,qkv]"],
                  registry.get)
    msg = "\n".join(e.value.problems)
    assert "'qkv'" in msg and "linear_q" in msg and "to_out.0" in msg


def test_missing_model_and_weights_are_one_sentence_each(song_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ConfigError) as e:
        check_job([f"data={song_dir}"], registry.get)
    assert any("No model chosen: add model=<name>" in p for p in e.value.problems)
    with pytest.raises(ConfigError) as e:
        check_job(["model=acestep", f"data={song_dir}"], registry.get)
    (msg,) = e.value.problems
    assert "model.checkpoint_dir=DIR" in msg and "model.preset=tiny" in msg


def test_lora_config_json_is_accepted_as_is(song_dir, tmp_path):
    from audiotrain.lora.from_config import settings_from_cfg

    p = tmp_path / "zh_rap_lora_config.json"
    p.write_text(json.dumps({"r": 256, "lora_alpha": 32, "use_rslora": True,
                             "target_modules": ["speaker_embedder", "linear_q", "to_q", "to_out.0"]}))
    cfg = check_job(["model=acestep", "model.preset=tiny", f"data={song_dir}", f"lora.config_path={p}"], registry.get)
    s = settings_from_cfg(cfg.lora, ())
    assert (s.r, s.alpha, s.use_rslora, s.scale) == (256, 32, True, 2.0)
    assert s.target_modules == ["speaker_embedder", "linear_q", "to_q", "to_out.0"]


def test_sweep_expansion_and_job_numbering(song_dir):
    jobs = expand_sweep(["model=acestep", "lora.r=8,16", "precision=32,bf16-mixed"])
    assert len(jobs) == 4 and jobs[3] == ["model=acestep", "lora.r=16", "precision=bf16-mixed"]
    cfg, problems = compose_checked(["model=acestep", "lora.r=8", "lora.alpha=${mul:2,${lora.r}}"])
    assert not problems and cfg.lora.alpha == 16
