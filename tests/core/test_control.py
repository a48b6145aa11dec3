"""LiveControl: control-file and stdin commands, CMD@STEP, lr that sticks, clean stops on signals."""
from __future__ import annotations

import os
import signal
import time
import warnings

import lightning as L
import pytest
import torch

from audiotrain.train.control import LiveControl, _LineReader, parse_command, set_lr


class Toy(L.LightningModule):
    """A Linear on random data; records the lr each optimizer step uses."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)
        self.lrs: dict[int, float] = {}

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.lin(x), y)

    def on_train_batch_start(self, batch, batch_idx):
        self.lrs[self.global_step] = self.trainer.optimizers[0].param_groups[0]["lr"]

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}


class AtStep(L.Callback):
    """Runs ``fn(step)`` at every batch end (placed before LiveControl, so it acts at the same step)."""

    def __init__(self, fn):
        self.fn = fn

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.fn(trainer.global_step)


class FakeTracker:
    def __init__(self):
        self.tags, self.metrics = [], []

    def set_tags(self, tags):
        self.tags.append(dict(tags))

    def log_metrics(self, metrics, step):
        self.metrics.append((dict(metrics), step))


def fit(tmp_path, control, max_steps=20, before=()):
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(64, 4), torch.randn(64, 1))
    module = Toy()
    trainer = L.Trainer(max_steps=max_steps, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                        enable_model_summary=False, accelerator="cpu", default_root_dir=str(tmp_path),
                        callbacks=[*before, control])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=4))
    return trainer, module


def test_control_file_schedules_lr_save_and_quit(tmp_path):
    (tmp_path / "control").write_text("lr 0.5@3\nsave@5\nquit@8\n")
    tracker = FakeTracker()
    control = LiveControl(stdin=False, control_file=tmp_path / "control", tracker=tracker)
    trainer, module = fit(tmp_path, control)
    assert trainer.global_step == 8
    assert [module.lrs[g] for g in range(3)] == [0.1] * 3
    assert [module.lrs[g] for g in range(3, 8)] == pytest.approx([0.5] * 5)  # the scheduler did not undo it
    assert (tmp_path / "checkpoints" / "manual-step=5.ckpt").is_file()
    assert (tmp_path / "checkpoints" / "manual-step=8.ckpt").is_file()
    ckpt = torch.load(tmp_path / "checkpoints" / "manual-step=5.ckpt", weights_only=False)
    assert ckpt["global_step"] == 5 and ckpt["lr_schedulers"][0]["base_lrs"] == pytest.approx([0.5])
    log = (tmp_path / "control.log").read_text()
    assert "step 3: lr 0.5@3 -> lr 0.5" in log
    assert "step 5: save@5 -> " in log and "manual-step=5.ckpt" in log
    assert "step 8: quit@8 -> saving and stopping" in log and "manual-step=8.ckpt" in log
    assert not (tmp_path / "control").exists() and not (tmp_path / "control.reading").exists()
    assert ({"control/lr": 0.5}, 3) in tracker.metrics
    assert tracker.tags[-1]["control.last"].startswith("step 8: save -> ")


def test_lines_appended_during_training_are_consumed_once(tmp_path):
    def write(step):
        if step in (2, 6):
            with open(tmp_path / "control", "a") as f:
                f.write("eval\n")

    calls = []
    control = LiveControl(control_file=tmp_path / "control", actions={"eval": lambda t, m: calls.append(t.global_step)})
    fit(tmp_path, control, max_steps=10, before=[AtStep(write)])
    assert calls == [2, 6]


def test_stdin_pipe_is_read_without_blocking(tmp_path):
    r, w = os.pipe()
    try:
        def write(step):  # nothing at steps 1-2 (must not block), half a line at 3, the rest at 5
            if step == 3:
                os.write(w, b"lr 0.")
            elif step == 5:
                os.write(w, b"25\n")

        control = LiveControl(stdin=r, run_dir=tmp_path)
        start = time.monotonic()
        trainer, module = fit(tmp_path, control, max_steps=10, before=[AtStep(write)])
        assert time.monotonic() - start < 30 and trainer.global_step == 10
        assert [module.lrs[g] for g in range(5)] == [0.1] * 5  # set after optimizer step 5: used from step 5 on
        assert [module.lrs[g] for g in range(5, 10)] == pytest.approx([0.25] * 5)
        assert "step 5: lr 0.25 -> lr 0.25" in (tmp_path / "control.log").read_text()
    finally:
        os.close(w)
        os.close(r)


def test_closed_or_missing_stdin_turns_reading_off():
    assert not _LineReader(None).active
    assert not _LineReader(10_000).active  # not an open descriptor
    r, w = os.pipe()
    os.write(w, b"save\n")
    os.close(w)
    reader = _LineReader(r)
    assert reader.active and reader.read_lines() == ["save"] and not reader.active  # EOF: off
    assert reader.read_lines() == []
    os.close(r)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_and_stops_cleanly(tmp_path, sig):
    before = signal.getsignal(sig)

    def kill(step):
        if step == 4:
            signal.raise_signal(sig)

    trainer, _ = fit(tmp_path, LiveControl(run_dir=tmp_path), before=[AtStep(kill)])
    assert trainer.global_step == 4
    assert (tmp_path / "checkpoints" / "manual-step=4.ckpt").is_file()
    assert f"step 4: {sig.name} received: saving and stopping" in (tmp_path / "control.log").read_text()
    assert signal.getsignal(sig) == before


def test_the_sweeps_stop_file_saves_and_stops_a_running_job(tmp_path):
    """Another job of a parallel sweep was stopped (it wrote <sweep dir>/STOP): this one saves and stops too."""
    stop = tmp_path / "STOP"
    control = LiveControl(run_dir=tmp_path, stop_file=stop)
    trainer, _ = fit(tmp_path, control, before=[AtStep(lambda step: step == 5 and stop.write_text("job 1 stopped"))])
    assert trainer.global_step == 5 and control.stopped_at == 5
    assert (tmp_path / "checkpoints" / "manual-step=5.ckpt").is_file()
    assert "step 5: the sweep's stop request received: saving and stopping" in (tmp_path / "control.log").read_text()


def test_bad_commands_warn_and_training_continues(tmp_path, capsys):
    (tmp_path / "control").write_text("dance\nlr abc\nsave@x\nlr -1\neval\n# a comment\n\n")
    trainer, _ = fit(tmp_path, LiveControl(control_file=tmp_path / "control"), max_steps=6)
    assert trainer.global_step == 6
    log = (tmp_path / "control.log").read_text().splitlines()
    assert len(log) == 5 and all("warning:" in line for line in log)
    err = capsys.readouterr().err
    assert "[control] step 1: warning: unknown command 'dance'" in err
    assert "'eval': no eval action in this run" in err


def test_parse_command():
    assert parse_command(" lr 3e-4@100 ").__dict__ == {"name": "lr", "value": 3e-4, "at": 100, "text": "lr 3e-4@100"}
    assert parse_command("SAVE").name == "save" and parse_command("quit@7").at == 7
    for bad, why in [("lr", "use lr X"), ("lr 0", "positive"), ("save now", "takes no argument"),
                     ("eval@soon", "must be an integer"), ("", "unknown command")]:
        with pytest.raises(ValueError, match=why):
            parse_command(bad)


def test_set_lr_rescales_a_decaying_schedule():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 ** s)
    for _ in range(2):
        opt.step()
        sched.step()
    trainer = type("T", (), {"optimizers": [opt], "lr_scheduler_configs": [type("C", (), {"scheduler": sched})]})
    set_lr(trainer, 0.1)
    assert opt.param_groups[0]["lr"] == 0.1 and sched.get_last_lr() == [0.1]
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)  # the schedule continues from 0.1


def test_pending_commands_survive_in_the_callback_state():
    control = LiveControl()
    control.pending = [parse_command("save@50"), parse_command("lr 1e-3@70")]
    again = LiveControl()
    again.load_state_dict(control.state_dict())
    assert [(c.name, c.at) for c in again.pending] == [("save", 50), ("lr", 70)]
