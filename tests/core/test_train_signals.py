"""`trainer.signal_handlers`: on (the default), a training run owns SIGTERM/Ctrl-C while it fits (a clean stop);
off (as every in-process test trains), the process's handlers are never touched - neither by our LiveControl nor
by Lightning's own SIGTERM notifier - so a stop signal cannot change a test's result."""
from __future__ import annotations

import signal

import pytest

from audiotrain.config.validate import ConfigError, validate
from audiotrain.plugins import registry
from audiotrain.train.control import LiveControl
from audiotrain.train.run import train
from tests.conftest import compose

SIGNALS = (signal.SIGTERM, signal.SIGINT)


@pytest.fixture
def seen(monkeypatch) -> list[dict]:
    """The SIGTERM/SIGINT handlers in place at every training step end, as LiveControl's hook runs."""
    seen: list[dict] = []
    step_end = LiveControl.on_train_batch_end

    def recording(self, trainer, *args, **kwargs):
        seen.append({sig: signal.getsignal(sig) for sig in SIGNALS})
        return step_end(self, trainer, *args, **kwargs)

    monkeypatch.setattr(LiveControl, "on_train_batch_end", recording)
    return seen


def test_off_leaves_the_process_handlers_untouched_during_fit(tiny_cfg, seen):
    def mine(signum, frame):  # a handler of the process's own, as pytest or an embedding program has
        raise AssertionError("no signal is sent in this test")

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        before = {sig: signal.getsignal(sig) for sig in SIGNALS}
        cfg = tiny_cfg("trainer.max_steps=3")
        assert cfg.trainer.signal_handlers is False  # tiny_cfg trains the way every in-process test does
        assert train(cfg)["steps"] == 3
        assert len(seen) == 3 and all(h == before for h in seen)
        assert {sig: signal.getsignal(sig) for sig in SIGNALS} == before
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_the_default_installs_the_clean_stop_handlers_and_restores_them(tiny_cfg, seen):
    assert compose(["model=acestep"]).trainer.signal_handlers is True
    before = {sig: signal.getsignal(sig) for sig in SIGNALS}
    assert train(tiny_cfg("trainer.max_steps=2", "trainer.signal_handlers=true"))["steps"] == 2
    assert len(seen) == 2
    for handlers in seen:
        for sig in SIGNALS:
            assert isinstance(getattr(handlers[sig], "__self__", None), LiveControl), (sig, handlers[sig])
    assert {sig: signal.getsignal(sig) for sig in SIGNALS} == before


def test_a_value_that_is_not_a_bool_is_one_sentence(tiny_cfg):
    cfg = tiny_cfg("trainer.signal_handlers=sometimes")
    with pytest.raises(ConfigError) as e:
        validate(cfg, registry.get("acestep"))
    assert e.value.problems == ["trainer.signal_handlers=sometimes must be true or false."]


def test_a_signal_after_training_waits_for_the_last_files_and_reaches_a_previous_handler(tmp_path, capfd):
    """Once training has ended (a `timeout` or SLURM limit landing as the final adapter and summary are written),
    SIGTERM no longer ends the process mid-write: it is noted, the block finishes, the handlers return, and a
    previous Python handler (a sweep's stop request) receives it."""
    import os

    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        control = LiveControl(run_dir=tmp_path, handle_signals=True)
        written = []
        with control.finishing():
            assert signal.getsignal(signal.SIGTERM) == control._on_signal
            os.kill(os.getpid(), signal.SIGTERM)
            written.append("summary.json")  # still runs: the signal did not end the block
        assert written == ["summary.json"] and control.late_signal == "SIGTERM"
        assert received == [signal.SIGTERM]  # passed on once, after the block
        assert "SIGTERM received after training ended" in capfd.readouterr().err
        assert signal.getsignal(signal.SIGTERM) is not control._on_signal
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_finishing_touches_nothing_with_signal_handling_off(tmp_path):
    before = {sig: signal.getsignal(sig) for sig in SIGNALS}
    control = LiveControl(run_dir=tmp_path, handle_signals=False)
    with control.finishing():
        assert {sig: signal.getsignal(sig) for sig in SIGNALS} == before
    assert {sig: signal.getsignal(sig) for sig in SIGNALS} == before and control.late_signal is None
