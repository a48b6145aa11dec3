"""``model.config=``: weights written without an embedded config (as vall-e's `--module-only` export, or an
older file) load when given the vall-e YAML they were trained with; a bad YAML is one sentence."""
from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import save_file

from audiotrain.errors import UserError
from audiotrain.plugins import registry
from audiotrain_valle.ar_nar import ARNAR
from audiotrain_valle.original_config import read_original_config
from audiotrain_valle.presets import get_preset, resolve_config, to_original_config
from tests.conftest import compose


def _yaml(tmp_path, model: dict, name: str = "config.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"audio_backend": "encodec", "models": [model], "trainer": {"iterations": 10}}))
    return path


def _bare_weights(tmp_path, model: ARNAR):
    path = tmp_path / "fp32.sft"  # tensors only: no config, no symmap in the header
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_weights_without_config_load_with_the_yaml_and_name_it_without(tmp_path):
    torch.manual_seed(0)
    src = ARNAR({"preset": "tiny", "version": 6})
    weights = _bare_weights(tmp_path, src)
    config = _yaml(tmp_path, {**to_original_config(src.config)})
    plugin = registry.get("valle")
    base = ["model=valle", "model.preset=tiny", f"model.weights={weights}"]
    cfg = compose([*base, f"model.config={config}"])
    assert plugin.validate(cfg) == []
    got = plugin.build_backbone(cfg).model
    assert isinstance(got, ARNAR) and got.config["version"] == 6
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), got.state_dict().values()))
    with pytest.raises(UserError) as e:
        plugin.build_backbone(compose(base))
    assert "carries no embedded config: pass model.config=" in str(e.value)


def test_the_yaml_decides_the_language_table(tmp_path):
    """ko is language id 5: refused with the tiny preset's table (4 entries), accepted with a YAML of langs=6,
    refused again with a YAML of langs=1 (the released config's)."""
    plugin = registry.get("valle")
    base = ["model=valle", "model.preset=tiny", "model.language=ko"]
    assert any("(langs=4)" in p for p in plugin.validate(compose(base)))
    wide = _yaml(tmp_path, to_original_config({**get_preset("tiny"), "langs": 6}), "wide.yaml")
    assert resolve_config(read_original_config(wide))["langs"] == 6
    assert plugin.validate(compose([*base, f"model.config={wide}"])) == []
    narrow = _yaml(tmp_path, to_original_config({**get_preset("tiny"), "langs": 1}), "narrow.yaml")
    problems = plugin.validate(compose([*base, f"model.config={narrow}"]))
    assert len(problems) == 1 and "language id 5" in problems[0] and "(langs=1)" in problems[0]


@pytest.mark.parametrize("text,needle", [
    (None, "does not exist"),
    ("models: [unclosed", "is not a readable YAML file"),
    ("trainer: {iterations: 3}\n", "has no models: entry"),
    ("models:\n  - {name: ar+nar, version: 7, size: full}\n", "its model cannot be built"),
])
def test_a_bad_yaml_is_one_sentence(tmp_path, text, needle):
    path = tmp_path / "config.yaml"
    if text is not None:
        path.write_text(text)
    problems = registry.get("valle").validate(compose(["model=valle", "model.preset=tiny", f"model.config={path}"]))
    assert len(problems) == 1 and needle in problems[0] and problems[0].startswith(f"model.config={path}")
    assert "\n" not in problems[0] and "data/config.yaml" in problems[0]
