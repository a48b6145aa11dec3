"""A resume keeps its checkpoint's learning rate (Lightning restores the optimizer and scheduler state): a changed
``optimizer.lr`` on the command line is said to have no effect, with what to do instead, never ignored silently."""
from __future__ import annotations

from types import SimpleNamespace

from audiotrain.train.module import LR_KEY, TrainModule, lr_note
from tests.conftest import compose


def test_the_note_names_both_rates_and_the_way_out():
    assert lr_note(None, 1e-4) is None  # a checkpoint from before the lr was recorded
    assert lr_note(1e-4, 1e-4) is None
    assert lr_note(1e30, 1e-4) == (
        "optimizer.lr=0.0001 differs from the checkpoint's 1e+30: a resume continues with the checkpoint's optimizer "
        "and scheduler state, so training goes on at its learning rate; to train at 0.0001, start a new run from its "
        "weights with model.init_from=<its run directory> instead.")


def test_a_checkpoint_records_its_lr_and_a_resume_at_another_says_so(capsys):
    old = compose(["model=acestep", "model.preset=tiny", "optimizer.lr=1e30"])
    new = compose(["model=acestep", "model.preset=tiny", "optimizer.lr=1e-4"])
    ckpt = {"state_dict": {}}
    TrainModule.on_save_checkpoint(SimpleNamespace(adapter_only=False, sampler=None, extra_state={}, cfg=old), ckpt)
    assert ckpt["audiotrain"][LR_KEY] == 1e30
    resumed = SimpleNamespace(cfg=new, sampler=None, extra_state={}, _trainer=SimpleNamespace(ckpt_path="x.ckpt"))
    TrainModule.on_load_checkpoint(resumed, ckpt)
    out = capsys.readouterr()
    text = " ".join((out.out + out.err).split())
    assert "optimizer.lr=0.0001 differs from the checkpoint's 1e+30" in text
    assert LR_KEY not in resumed.extra_state  # not carried into the next checkpoint as extra state
    same = SimpleNamespace(cfg=old, sampler=None, extra_state={}, _trainer=SimpleNamespace(ckpt_path="x.ckpt"))
    TrainModule.on_load_checkpoint(same, ckpt)
    out = capsys.readouterr()
    assert "differs" not in out.out + out.err
