"""Signals as clusters send them: SIGTERM or SIGINT delivered to the whole process group of a real run with two
data-loader workers (what ``timeout``, Ctrl-C in a terminal and a SLURM time limit do). The workers ignore it; the
training process saves a checkpoint within a step or two and exits cleanly, leaving no process of the group
behind."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from audiotrain.safe_files import load_torch
from tests.core.conftest import cli_env

pytestmark = pytest.mark.slow  # two real runs with worker processes, ~20 s each on 2 cores
STEP_FILE = re.compile(r"^step=(\d+)\.ckpt$")
MANUAL_FILE = re.compile(r"^manual-step=(\d+)\.ckpt$")


def _newest(log_dir: Path, pattern: re.Pattern) -> int | None:
    steps = [int(m.group(1)) for p in log_dir.glob("*/*/checkpoints/*.ckpt") if (m := pattern.match(p.name))]
    return max(steps) if steps else None


def _members(pgid: int) -> list[str]:
    return subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout.split()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_whole_process_group_saves_and_stops(sig, song_dir, tmp_path):
    log_dir = tmp_path / "exps"
    cmd = [sys.executable, "-m", "audiotrain.cli.main", "model=acestep", "model.preset=tiny", f"data={song_dir}",
           "trainer.max_steps=100000", "trainer.every_n_train_steps=2", "trainer.keep_last_n=100",
           "trainer.every_plot_step=0", "trainer.eval_audio=false", "trainer.progress_bar=false",
           "trainer.stdin_control=false", "trainer.accelerator=cpu", "dataset.num_workers=2", "dataset.batch_size=1",
           "dataset.max_duration=4", "lora.r=4", "lora.alpha=8", f"paths.log_dir={log_dir}"]
    out = tmp_path / "out.txt"
    with open(out, "w") as sink:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=cli_env(tmp_path), stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own process group, as a job under timeout/SLURM
        pgid = proc.pid
        try:
            deadline = time.time() + 300
            # past step 4, at a moment the training process and its two loader workers are all alive (the workers
            # of an epoch end with it and the next epoch starts new ones)
            while (_newest(log_dir, STEP_FILE) or 0) < 4 or len(_members(pgid)) < 3:
                assert proc.poll() is None, out.read_text()[-3000:]
                assert time.time() < deadline, f"the run did not reach step 4 with 2 workers in 300 s: {_members(pgid)}"
                time.sleep(0.05)
            at = _newest(log_dir, STEP_FILE)
            os.killpg(pgid, sig)
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(pgid, signal.SIGKILL)
    text = out.read_text()
    assert "killed by signal" not in text and "Traceback" not in text, text[-3000:]
    assert f"{sig.name} received: saving and stopping" in text, text[-3000:]
    assert code == 0, text[-3000:]
    saved = _newest(log_dir, MANUAL_FILE)
    assert saved is not None and at <= saved <= at + 3, (at, saved)  # within a step or two of the signal
    ckpt = next(log_dir.glob(f"*/*/checkpoints/manual-step={saved}.ckpt"))
    assert load_torch(ckpt, expected="a training checkpoint")["global_step"] == saved
    assert "Stopped early." in text
    time.sleep(1)
    assert not _group_alive(pgid), subprocess.run(["ps", "-o", "pid,stat,cmd", "-g", str(pgid)],
                                                  capture_output=True, text=True).stdout
