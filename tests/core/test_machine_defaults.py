"""Defaults for the machine in front of the user: the experiment is named after the plugin and the data folder,
loader workers fit the cores, and a run says how long it will train before it starts."""
from __future__ import annotations

import os
import warnings

import pytest
from omegaconf import OmegaConf

from audiotrain.config.resolvers import exp_name_for
from audiotrain.errors import UserError
from audiotrain.train import data_workers as dw
from audiotrain.train.run_length import length_line
from tests.conftest import compose


def test_experiment_name_is_the_plugin_and_the_data_folder(tmp_path, monkeypatch):
    songs = tmp_path / "My Songs (2024)"
    songs.mkdir()
    (songs / "metadata.jsonl").write_text("{}\n")
    assert exp_name_for("acestep", str(songs)) == "acestep-My_Songs_2024"
    assert exp_name_for("acestep", str(songs) + "/") == "acestep-My_Songs_2024"
    assert exp_name_for("valle", str(songs / "metadata.jsonl")) == "valle-My_Songs_2024"  # a file: its folder
    monkeypatch.chdir(songs)
    assert exp_name_for("acestep", ".") == "acestep-My_Songs_2024"  # data=.: the working directory's name
    assert exp_name_for("acestep", None) == "acestep" and exp_name_for("acestep", "") == "acestep"
    assert exp_name_for("acestep", str(tmp_path / "not" / "yet")) == "acestep-yet"  # the checker reports it
    mine = tmp_path / "mysongs"
    mine.mkdir()
    assert compose(["model=acestep", f"data={mine}"]).exp_name == "acestep-mysongs"
    assert compose(["model=valle", f"data={mine}"]).exp_name == "valle-mysongs"
    assert compose(["model=acestep", f"data={mine}", "exp_name=mine"]).exp_name == "mine"
    assert compose(["model=acestep", "experiment=acestep_demo", f"data={mine}"]).exp_name == "demo"


@pytest.mark.parametrize("cores,processes,expected", [(1, 1, 0), (2, 1, 1), (4, 1, 3), (8, 2, 3), (64, 1, 8),
                                                      (2, 4, 0)])
def test_auto_workers_spare_one_core_per_training_process(cores, processes, expected):
    assert dw.auto_workers(cores, processes) == expected
    assert dw.data_workers("auto", processes, cores=cores) == (expected, None)
    assert dw.data_workers(None, processes, cores=cores) == (expected, None)


def test_the_default_is_auto_and_fits_this_machine():
    assert compose(["model=acestep"]).dataset.num_workers == "auto"
    n, note = dw.data_workers("auto")
    assert n == dw.auto_workers(len(os.sched_getaffinity(0))) and note is None


def test_more_workers_than_the_cores_spare_are_kept_and_explained_once():
    n, note = dw.data_workers(8, cores=2)
    assert n == 8
    assert note == ("dataset.num_workers=8 starts more loader processes than the 2 CPU core(s) here can spare beside "
                    "training (1): they will take turns on the cores; dataset.num_workers=auto picks 1.")
    assert dw.data_workers(1, cores=2) == (1, None) and dw.data_workers(0, cores=2) == (0, None)
    said: list[str] = []
    dw._explained.clear()
    for _ in range(3):
        dw.explain_once(8, note, said.append)
    assert said == [note]
    with warnings.catch_warnings(record=True) as caught:  # torch's own warning is not repeated on top
        warnings.simplefilter("default")
        dw.data_workers(8, cores=2)
        warnings.warn("This DataLoader will create 8 worker processes in total. Our suggested max ...", UserWarning)
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize("value", ["many", -1, 2.5, True and "2x"])
def test_a_worker_count_that_is_not_one_is_one_sentence(value):
    with pytest.raises(UserError, match=r"dataset.num_workers=.* is not a number of processes: give 0 .*auto \(\d+"):
        dw.data_workers(value, cores=2)


def _trainer(max_steps: int, max_epochs: int = -1):
    return OmegaConf.create({"trainer": {"max_steps": max_steps, "max_epochs": max_epochs}})


def test_a_run_with_no_length_named_says_how_long_and_how_to_change_it():
    line = length_line(_trainer(2_000_000), 9, 9, ["model=acestep", "data=songs"])
    assert line == ("Training for 2,000,000 optimizer steps (the default), about 222,222 epochs of 9 examples. To train "
                    "for another length, set trainer.max_steps=N or trainer.max_epochs=N (a run stopped early keeps "
                    "its checkpoint; resume=auto continues it).")


def test_a_named_length_says_where_it_came_from():
    assert length_line(_trainer(300), 9, 9, ["experiment=acestep_demo"]) == (
        "Training for 300 optimizer steps (experiment=acestep_demo), about 33 epochs of 9 examples.")
    assert length_line(_trainer(24), 6, 3, ["debug=smoke", "trainer.max_steps=24"]) == (
        "Training for 24 optimizer steps (trainer.max_steps=24), about 8.0 epochs of 6 examples.")
    assert length_line(_trainer(2_000_000, 5), 10, 5, ["trainer.max_epochs=5"]) == (
        "Training for 5 epochs of 10 examples = 25 optimizer steps (trainer.max_epochs=5).")
    assert length_line(_trainer(-1, -1), 1, 1, ["trainer.max_steps=-1"]).startswith(
        "Training with no end (trainer.max_steps=-1, trainer.max_epochs=-1): it runs until stopped")
