"""StepCheckpoint: ModelCheckpoint's behaviour and state key, its per-step checks only where it can save."""
from __future__ import annotations

from types import SimpleNamespace

from lightning.pytorch.callbacks import ModelCheckpoint

from audiotrain.train.callbacks import StepCheckpoint


def test_same_state_key_as_model_checkpoint(tmp_path):
    kw = dict(dirpath=str(tmp_path), filename="step={step}", every_n_train_steps=4, save_top_k=2, monitor="step",
              mode="max", save_last=True)
    assert StepCheckpoint(**kw).state_key == ModelCheckpoint(**kw).state_key


def test_checks_run_only_on_the_steps_that_can_save(tmp_path, monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(ModelCheckpoint, "on_train_batch_end",
                        lambda self, trainer, *a: calls.append(trainer.global_step))
    cb = StepCheckpoint(dirpath=str(tmp_path), every_n_train_steps=4)
    for step in range(1, 13):
        cb.on_train_batch_end(SimpleNamespace(global_step=step), None, None, None, step - 1)
    assert calls == [4, 8, 12]
    never = StepCheckpoint(dirpath=str(tmp_path), every_n_train_steps=0)
    never.on_train_batch_end(SimpleNamespace(global_step=4), None, None, None, 3)
    assert calls == [4, 8, 12]
