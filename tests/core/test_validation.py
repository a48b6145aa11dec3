"""Held-out validation: the split (reproducible, disjoint, speaker-disjoint), val_data=PATH, val/* measured on all
of the held-out set with fixed noise at trainer.val_check_interval, and mode=eval reporting it."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from audiotrain.data.prepare import DataError
from audiotrain.train.val_split import config_problems, default_metric, split_group, split_rows
from tests.valle.conftest import voice_dir  # noqa: F401  (the espeak-ng voices fixture)


def _rows(n_speakers: int = 0, n: int = 40) -> list[dict]:
    if n_speakers:
        return [{"key": f"spk{i % n_speakers}/clip{i}", "audio_path": f"/x/{i}.wav", "speaker": f"spk{i % n_speakers}"}
                for i in range(n)]
    return [{"key": f"song_{i:03d}", "audio_path": f"/x/{i}.mp3"} for i in range(n)]


def test_split_is_reproducible_disjoint_and_independent_of_row_order():
    rows = _rows()
    train, val = split_rows(rows, 0.2)
    assert len(val) == 8 and len(train) == 32
    assert {r["key"] for r in train}.isdisjoint({r["key"] for r in val})
    assert {r["key"] for r in train} | {r["key"] for r in val} == {r["key"] for r in rows}
    shuffled = rows[:]
    random.Random(3).shuffle(shuffled)
    again_train, again_val = split_rows(shuffled, 0.2)
    assert {r["key"] for r in again_val} == {r["key"] for r in val}
    # the held-out keys are a hash choice, not the first or last rows
    held = sorted(r["key"] for r in val)
    assert held != [r["key"] for r in rows[:8]] and held != [r["key"] for r in rows[-8:]]


def test_split_is_speaker_disjoint():
    rows = _rows(n_speakers=10, n=60)
    train, val = split_rows(rows, 0.3, group_field="speaker")
    train_spk, val_spk = {r["speaker"] for r in train}, {r["speaker"] for r in val}
    assert len(val_spk) == 3 and len(train_spk) == 7 and train_spk.isdisjoint(val_spk)
    assert len(val) == 18  # every utterance of a held-out speaker, none of the others
    assert split_group(rows[0], "speaker") == "group:spk0" and split_group({"key": "a"}, "speaker") == "key:a"
    assert split_group(rows[0], None) == f"key:{rows[0]['key']}"  # a plugin without groups splits by example


def test_too_little_data_and_bad_settings_are_one_sentence_each(tmp_path):
    with pytest.raises(DataError, match=r"dataset.val_fraction=0.5 needs at least 2 speakers .* has 1"):
        split_rows(_rows(n_speakers=1, n=4), 0.5, group_field="speaker")
    # a tiny fraction still holds one group out, and never all of them
    assert len(split_rows(_rows(n=3), 0.01)[1]) == 1 and len(split_rows(_rows(n=3), 0.99)[0]) == 1
    from tests.conftest import compose

    cfg = compose(["model=acestep", f"data={tmp_path}", "dataset.val_fraction=1.5", f"val_data={tmp_path / 'nope'}",
                   "trainer.val_check_interval=-3"])
    problems = config_problems(cfg)
    assert len(problems) == 4, problems
    assert any("dataset.val_fraction=1.5 must be a number in [0, 1)" in p for p in problems)
    assert any("val_data=" in p and "does not exist" in p for p in problems)
    assert any("both choose the validation set" in p for p in problems)
    assert any("trainer.val_check_interval=-3" in p for p in problems)


def test_sweep_metric_defaults_to_the_held_out_loss(tmp_path):
    from tests.conftest import compose

    base = ["model=acestep", f"data={tmp_path}"]
    assert default_metric(compose(base)) == "train_fixed/loss"
    assert default_metric(compose(base + ["dataset.val_fraction=0.2"])) == "val/loss"
    assert default_metric(compose(base + [f"val_data={tmp_path}"])) == "val/loss"
    assert default_metric(compose(base + ["dataset.val_fraction=0.2", "sweep_metric=train/loss"])) == "train/loss"


def test_val_fraction_holds_songs_out_of_training(tiny_cfg, tmp_path):
    from audiotrain.plugins import registry
    from audiotrain.train.data_setup import load_data

    cfg = tiny_cfg("dataset.val_fraction=0.5", "dataset.repeat_count=3")
    data = load_data(cfg, registry.get("acestep"), tmp_path / "run", "cpu")
    train_keys = {it.row["key"] for it in data.train.items}
    val_keys = {it.row["key"] for it in data.val.items}
    assert len(val_keys) == 2 and len(train_keys) == 2 and train_keys.isdisjoint(val_keys)
    assert len(data.train) == 6 and len(data.val) == 2  # repeat_count inflates training only
    again = load_data(cfg, registry.get("acestep"), tmp_path / "run2", "cpu")  # the same split every run
    assert {it.row["key"] for it in again.val.items} == val_keys


def test_val_data_path_has_its_own_report_and_never_overlaps_training(tiny_cfg, song_dir, tmp_path):
    from audiotrain.plugins import registry
    from audiotrain.train.data_setup import load_data
    from audiotrain_acestep.demo_songs import add_broken_inputs, demo_specs, write_song_folder

    held = tmp_path / "held_out"
    specs = demo_specs(6, seconds=3.0)[4:]  # two songs the training folder (the first four) does not have
    write_song_folder(held, specs)
    add_broken_inputs(held)
    run = tmp_path / "run"
    data = load_data(tiny_cfg(f"val_data={held}"), registry.get("acestep"), run, "cpu")
    assert sorted(it.row["key"] for it in data.val.items) == sorted(s.name for s in specs)
    assert {it.row["key"] for it in data.train.items}.isdisjoint(it.row["key"] for it in data.val.items)
    report = json.loads((run / "bad_inputs_val.json").read_text())
    assert report["usable"] == 2 and len(report["skipped"]) == 4  # the broken, silent, orphan and latin-1 files
    assert json.loads((run / "bad_inputs.json").read_text())["skipped"] == []  # the training report is its own
    assert "Validation Data:" in data.report_text()
    with pytest.raises(DataError, match=r"val_data=.* holds 4 example\(s\) that data=.* trains on"):
        load_data(tiny_cfg(f"val_data={song_dir}"), registry.get("acestep"), tmp_path / "run3", "cpu")


def test_voice_split_is_speaker_disjoint(voice_dir, tmp_path):  # noqa: F811
    from audiotrain.plugins import registry
    from audiotrain.train.data_setup import load_data
    from tests.conftest import compose

    cfg = compose(["model=valle", f"data={voice_dir}", "model.preset=tiny", "dataset.val_fraction=0.5",
                   f"cache_dir={tmp_path / 'cache'}", "trainer.accelerator=cpu"])
    data = load_data(cfg, registry.get("valle"), tmp_path / "run", "cpu")
    train_spk, val_spk = set(data.train.groups), set(data.val.groups)
    assert len(train_spk) == len(val_spk) == 1 and train_spk.isdisjoint(val_spk)
    assert len(data.val) == 3  # all of the held-out speaker's clips


def test_val_loss_at_the_interval_on_all_of_the_set_with_fixed_noise(tiny_cfg, tmp_path):
    from audiotrain.plugins import registry
    from audiotrain.train.data_setup import load_data
    from audiotrain.train.fixed_noise_loss import fixed_noise_losses
    from audiotrain.train.model_setup import build_model
    from audiotrain.train.module import TrainModule
    from audiotrain.train.run import train

    extra = ("dataset.val_fraction=0.5", "trainer.max_steps=4", "trainer.val_check_interval=2",
             "trainer.every_n_train_steps=4", "trainer.val_noise_draws=2", "trainer.stdin_control=false",
             "trainer.signal_handlers=false")
    s = train(tiny_cfg(*extra, run="a"))
    assert [step for step, _ in s["val_loss"]] == [0, 2, 4]
    assert s["val_examples"] == 2
    assert s["last_metrics"]["val/loss"] == s["val_loss"][-1][1]
    assert all(torch.isfinite(torch.tensor(v)) for _, v in s["val_loss"])
    # a second, identical run measures the identical numbers (same weights, same fixed noise)
    s2 = train(tiny_cfg(*extra, run="b"))
    assert s2["val_loss"] == s["val_loss"]

    # the measurement is the mean over ALL held-out examples x draws, each with its own fixed noise
    cfg = tiny_cfg(*extra, run="c")
    plugin = registry.get("acestep")
    data = load_data(cfg, plugin, tmp_path / "c", "cpu")
    torch.manual_seed(0)
    model = build_model(cfg, plugin, report=False)
    module = TrainModule(model.backbone, plugin, cfg, data.encoders, None, adapter_only=True)
    both = fixed_noise_losses(module, data.val, draws=2)
    assert fixed_noise_losses(module, data.val, draws=2) == both  # fixed noise: the same numbers again
    one = [fixed_noise_losses(module, _Subset(data.val, [i]), draws=2)["loss"] for i in range(len(data.val))]
    assert both["loss"] == pytest.approx(sum(one) / len(one), rel=1e-6)
    assert one[0] != pytest.approx(one[1])  # two different examples, not one counted twice
    assert module.training  # put back in training mode afterwards


class _Subset:
    """The held-out set restricted to some of its examples (same keys, hence the same noise)."""

    def __init__(self, ds, keep):
        self.ds, self.keep = ds, keep

    def __len__(self):
        return len(self.keep)

    def __getitem__(self, i):
        return self.ds[self.keep[i]]

    def same_group(self, index):
        return []


def test_mode_eval_reports_the_held_out_loss_of_the_checkpoint(tiny_cfg, tmp_path):
    from audiotrain.train.evaluate import eval_message, run_eval
    from audiotrain.train.run import train

    extra = ("dataset.val_fraction=0.5", "trainer.max_steps=2", "trainer.val_check_interval=2",
             "trainer.every_n_train_steps=2", "model.sample_steps=2", "trainer.eval_prompts=1",
             "trainer.stdin_control=false", "trainer.signal_handlers=false")
    s = train(tiny_cfg(*extra, run="trained"))
    ckpt = Path(s["run_dir"]) / "checkpoints" / "last.ckpt"
    result = run_eval(tiny_cfg(*extra, "mode=eval", f"ckpt_path={ckpt}", run="eval"))
    assert result["step"] == 2 and result["val_examples"] == 2
    # the same weights, the same held-out set, the same fixed noise: the number the run logged at its last step
    assert result["val"]["val/loss"] == pytest.approx(s["val_loss"][-1][1], rel=1e-6)
    # the audio eval's prompts are held-out examples too
    from audiotrain.plugins import registry
    from audiotrain.train.data_setup import load_data

    data = load_data(tiny_cfg(*extra, run="keys"), registry.get("acestep"), tmp_path / "keys", "cpu")
    assert [r["key"] for r in result["per_example"]] == [data.val.items[0].row["key"]]
    assert f"val/loss = {result['val']['val/loss']:.4f} on 2 held-out examples" in eval_message(result)


def test_done_message_prints_the_held_out_trend():
    from audiotrain.cli.train_entry import done_message

    summary = {"steps": 300, "loss_start_mean": 0.9, "loss_end_mean": 0.4, "run_dir": "/r", "adapter_dir": "/r/a",
               "val_loss": [(0, 1.014), (50, 0.6513), (100, 0.6405), (150, 0.66)], "val_examples": 3,
               "train_fixed_loss": [(0, 0.99), (300, 0.5)]}
    text = done_message(summary)
    assert ("held-out val/loss (3 examples, fixed noise): 1.0140 at step 0 → 0.6600 at step 150 (-35%; best "
            "0.6405 at step 100)") in text
    assert "train_fixed/loss (training examples, fixed noise): 0.9900 at step 0 → 0.5000 at step 300" in text
    no_val = done_message({**summary, "val_loss": []})
    assert "no held-out data: add val_data=PATH or dataset.val_fraction=0.1" in no_val


def test_mode_eval_reads_checkpoints_as_data_and_refuses_others_in_one_sentence(tiny_cfg, tmp_path):
    import torch

    from audiotrain.errors import UserError
    from audiotrain.train.checkpoint_check import read_checkpoint

    class Carrier:  # a pickle that would run code when unpickled without weights_only
        def __reduce__(self):
            return (print, ("this must never run",))

    crafted = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "payload": Carrier()}, str(crafted))
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    says = {crafted: "holds pickled Python code (print) that loading would run, so it was not opened; pass "
                     "a .ckpt file from a run's checkpoints/ folder, or — only for a file you made yourself — add "
                     "trust_pickle=true.",
            text: "is a text file, not a training checkpoint: pass a .ckpt file from a run's checkpoints/ folder."}
    for bad, sentence in says.items():  # mode=eval's load_checkpoint reads through read_checkpoint
        with pytest.raises(UserError) as err:
            read_checkpoint(bad, tiny_cfg("mode=eval", f"ckpt_path={bad}"))
        assert str(err.value) == f"ckpt_path={bad} {sentence}"
