"""A language VALL-E's checkpoint has no id for is one sentence at the config check, never silently English."""
from __future__ import annotations

import pytest

from audiotrain.errors import UserError
from audiotrain.plugins import registry
from audiotrain_valle.collate import lang_id, lang_problem
from tests.conftest import compose


def test_language_ids_are_the_originals():
    assert [lang_id(x, 6) for x in ("en-us", "ja", "de", "fr-fr", "cmn-latn-pinyin", "ko")] == [0, 1, 2, 3, 4, 5]
    assert lang_id("zh", 6) == 4 and lang_id("ko", 6) == 5 and lang_id("en", 1) == 0


def test_a_language_beyond_the_table_is_one_sentence_not_english():
    assert lang_problem("zh", 4) == (
        "model.language=zh is language id 4, but the model's language table has 4 entries (langs=4), so it would be "
        "trained as another language: use a model with langs >= 5, or a language below id 4.")
    assert "langs=1" in lang_problem("ko", 1) and "1 entry" in lang_problem("ko", 1)
    with pytest.raises(UserError, match="model.language=ko is language id 5"):
        lang_id("ko", 4)
    with pytest.raises(UserError, match=r"model.language=es is not one of VALL-E's languages \(en \(0\), ja \(1\)"):
        lang_id("es", 6)


def test_the_config_check_reports_it_before_anything_runs():
    problems = registry.get("valle").validate(compose(["model=valle", "model.preset=tiny", "model.language=zh"]))
    assert any(p.startswith("model.language=zh is language id 4") for p in problems), problems
    assert registry.get("valle").validate(compose(["model=valle", "model.preset=tiny"])) == []


@pytest.mark.parametrize("suffix", [".sft", ".pth"])
def test_the_check_reads_the_language_table_of_the_weights_it_fine_tunes(tmp_path, suffix):
    """model.weights= a file whose embedded config has langs=6: zh (id 4) is a language of that model, although
    the tiny preset's own table is smaller; without the weights the same language is refused."""
    from audiotrain_valle.ar_nar import ARNAR
    from audiotrain_valle.checkpoint import embedded_config, save_exported
    from audiotrain_valle.presets import resolve_config

    plugin = registry.get("valle")
    base = ["model=valle", "model.preset=tiny", "model.language=zh"]
    assert int(resolve_config("tiny")["langs"]) <= 4 and plugin.validate(compose(base))
    path = tmp_path / f"fp32{suffix}"
    save_exported(ARNAR(resolve_config({"preset": "tiny", "langs": 6})), path)
    assert int(resolve_config(embedded_config(path))["langs"]) == 6
    problems = plugin.validate(compose([*base, f"model.weights={path}"]))
    assert not [p for p in problems if "model.language" in p], problems
