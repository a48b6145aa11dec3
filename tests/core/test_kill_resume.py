"""Fault injection: every installed plugin's tiny preset is trained through the CLI and interrupted seven times -
five SIGKILLs and two SIGTERMs (in a random order: over CI runs every combination comes up), at steps (and moments within a step) drawn from a printed seed - each time
restarted with the same command and ``resume=auto``; its final weights, optimizer and scheduler state equal an
uninterrupted run's bit for bit (CPU). A SIGTERM saves within one step and exits; every restart continues the same
MLflow run.

Replay a failure with the seed it prints: ``AUDIOTRAIN_KILL_SEED=<seed> pytest tests/core/test_kill_resume.py``.

The progress signal is what the run writes anyway: a checkpoint every step (``trainer.every_n_train_steps=1``),
``<run_dir>/checkpoints/step=N.ckpt`` appearing by rename once complete. A kill waits for step N's file of the
current process, then a random fraction of a step more, so kills land in the middle of a step's compute, of its
checkpoint write or of ``last.ckpt``'s.
"""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from audiotrain.plugins import registry
from audiotrain.safe_files import load_torch
from audiotrain.train.run_dir import find_latest_checkpoint
from tests.conftest import REPORT
from tests.core.conftest import cli_env

SEED_ENV = "AUDIOTRAIN_KILL_SEED"
MAX_STEPS = 20
LAST_SIGNAL_STEP = MAX_STEPS - 3  # two steps to spare: a signal must land before the run ends on its own
KILLS, TERMS = 5, 2  # five SIGKILLs and two SIGTERMs per plugin (make test runs it beside the others: -n)
STEP_FILE = re.compile(r"^step=(\d+)(?:-v\d+)?\.ckpt$")
MANUAL_FILE = re.compile(r"^manual-step=(\d+)\.ckpt$")
EXIT_TIMEOUT = 120  # seconds a signalled process may take to end (a SIGTERM saves first)
ATTEMPT_TIMEOUT = 900  # seconds an attempt may take to reach its step (or the last one to finish)


def kill_seed() -> int:
    given = os.environ.get(SEED_ENV)
    return int(given) if given else random.SystemRandom().randrange(2**31)


def interruptions(rng: random.Random) -> list[tuple[int, float, signal.Signals]]:
    """KILLS + TERMS (step, fraction of a step, signal): distinct increasing steps, the signals in a random order."""
    steps = sorted(rng.sample(range(1, LAST_SIGNAL_STEP + 1), KILLS + TERMS))
    sigs = [signal.SIGKILL] * KILLS + [signal.SIGTERM] * TERMS
    rng.shuffle(sigs)
    return [(s, rng.random(), sig) for s, sig in zip(steps, sigs)]


def command(plugin: str, data: Path, log_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "audiotrain.cli.main", f"model={plugin}", f"data={data}", "model.preset=tiny",
            f"trainer.max_steps={MAX_STEPS}", "trainer.every_n_train_steps=1", "trainer.keep_last_n=2",
            f"trainer.eval_every_n_steps={MAX_STEPS}", "trainer.every_plot_step=0", "trainer.eval_audio=false",
            "trainer.progress_bar=false", "trainer.stdin_control=false", "trainer.accelerator=cpu",
            "trainer.accumulate_grad_batches=1", "dataset.batch_size=2", "dataset.max_duration=4",
            "dataset.num_workers=1", "lora.r=4", "lora.alpha=8", "cache=true", f"paths.log_dir={log_dir}", *extra]


def step_files(log_dir: Path, since_ns: int = 0) -> dict[int, int]:
    """Step -> mtime (ns) of the ``step=N.ckpt`` files written at or after ``since_ns``."""
    out: dict[int, int] = {}
    for p in log_dir.glob("*/*/checkpoints/*.ckpt"):
        m = STEP_FILE.match(p.name)
        try:
            mtime = p.stat().st_mtime_ns
        except FileNotFoundError:  # kept-last-N removal
            continue
        if m and mtime >= since_ns:
            out[int(m.group(1))] = mtime
    return out


class Driven:
    """The same command started again and again, each time interrupted at a planned step, then run to the end."""

    def __init__(self, argv: list[str], cwd: Path, log_dir: Path, seed: int):
        self.argv, self.cwd, self.log_dir, self.seed = argv, cwd, log_dir, seed
        self.env = cli_env(cwd)
        self.n = 0
        self.origin = "scratch"
        self.resumed_from: set[str] = set()
        self.done = 0  # the newest step whose step=N.ckpt was complete when the last signal was sent
        self.resumed_at = 0  # the step the current attempt resumed from
        self.events: list[str] = []

    def replay(self) -> str:
        return f"(replay: {SEED_ENV}={self.seed}; events: {'; '.join(self.events)})"

    def start(self) -> tuple[subprocess.Popen, Path, int]:
        if self.n:  # resume=auto must find the newest complete checkpoint: none of the finished steps is lost
            found = find_latest_checkpoint(self.log_dir, run_dir_of(self.log_dir).parent.name)
            step = load_torch(found, expected="a training checkpoint")["global_step"] if found else None
            assert step is not None and step >= self.done, \
                f"after step {self.done} resume=auto finds {found} (step {step}) {self.replay()}"
            self.origin = f"{found.name}, step {step}"
            self.resumed_at = step
            self.resumed_from.add(found.name)
        self.n += 1
        err = self.cwd / f"attempt{self.n}.stderr"
        since = time.time_ns() - 1_000_000  # coarse filesystem clocks: 1 ms of slack
        p = subprocess.Popen([*self.argv, "resume=auto"], cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=open(err, "w"))
        return p, err, since

    def tail(self, err: Path) -> str:
        return err.read_text()[-3000:]

    def interrupt(self, step: int, fraction: float, sig: signal.Signals) -> None:
        p, err, since = self.start()
        if step <= self.resumed_at:  # a loaded machine let the last signal land later than planned: the next step
            step = self.resumed_at + 1
        if step > LAST_SIGNAL_STEP + 1:  # no room left before the run ends on its own
            p.kill()
            p.wait()
            self.events.append(f"{sig.name} skipped: the run had resumed at step {self.resumed_at}")
            return
        seen: dict[int, float] = {}
        deadline = time.monotonic() + ATTEMPT_TIMEOUT
        try:
            while not seen or max(seen) < step:
                assert p.poll() is None, f"attempt {self.n} exited ({p.returncode}) before step {step} " \
                                         f"{self.replay()}\n{self.tail(err)}"
                assert time.monotonic() < deadline, f"attempt {self.n} never reached step {step} {self.replay()}"
                time.sleep(0.01)
                seen = step_files(self.log_dir, since)
            times = sorted(seen.values())
            per_step = (times[-1] - times[-2]) / 1e9 if len(times) > 1 else 0.3
            time.sleep(fraction * per_step)  # somewhere inside the next step: compute, checkpoint or last.ckpt write
            sent = time.time_ns()
            p.send_signal(sig)
            rc = p.wait(timeout=EXIT_TIMEOUT)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        # the newest step complete when the signal was sent (its file's time, not when this thread looked)
        at = self.done = max(s for s, t in step_files(self.log_dir, since).items() if t <= sent)
        self.events.append(f"{sig.name} at step {at}+{fraction:.2f} (attempt {self.n}, from {self.origin})")
        if sig == signal.SIGKILL:
            assert rc == -signal.SIGKILL, f"{rc} {self.replay()}"
            return
        if at >= MAX_STEPS:  # a loaded machine let the signal land after the last step: the run's files come first
            summary = json.loads(next(self.log_dir.glob("*/*/summary.json")).read_text())
            assert rc in (0, -signal.SIGTERM) and summary["steps"] == MAX_STEPS and summary["completed"], \
                f"SIGTERM after the last step: exit {rc} {self.replay()}\n{self.tail(err)}"
            self.events[-1] += " (after the last step: the run had finished)"
            return
        # SIGTERM: a checkpoint of the step it arrived in (or the next one), then a clean exit
        manual = [int(m.group(1)) for q in self.log_dir.glob("*/*/checkpoints/manual-step=*.ckpt")
                  if (m := MANUAL_FILE.match(q.name)) and q.stat().st_mtime_ns >= sent]
        text = err.read_text()
        assert rc == 0 and "SIGTERM received: saving and stopping" in text and "Stopped early" in text, \
            f"SIGTERM at step {at}: exit {rc} {self.replay()}\n{self.tail(err)}"
        assert len(manual) == 1 and at <= manual[0] <= at + 1, \
            f"SIGTERM at step {at} saved {manual} {self.replay()}"

    def finish(self) -> Path:
        p, err, _ = self.start()
        try:
            rc = p.wait(timeout=ATTEMPT_TIMEOUT)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        text = err.read_text()
        resumed = re.search(r"Resuming from (\S+\.ckpt)", text)
        assert rc == 0 and resumed, f"last attempt: exit {rc} {self.replay()}\n{self.tail(err)}"
        self.events.append(f"finished (attempt {self.n}, from {self.origin})")
        return Path(resumed.group(1)).parent.parent


def run_dir_of(log_dir: Path) -> Path:
    dirs = [d.parent for d in log_dir.glob("*/*/checkpoints")]
    assert len(dirs) == 1, dirs
    return dirs[0]


def tensors_of(path: Path) -> dict:
    if path.suffix in (".safetensors", ".sft"):
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same(a, b, where: str) -> None:
    """Nested dicts/lists of tensors and plain values: equal, tensors bit for bit (torch.equal, same dtype)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys {set(a) ^ set(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def compare_runs(ref: Path, got: Path, replay: str) -> int:
    """Every weights file of the final adapter (PEFT and native formats) and the last checkpoint's trained state:
    identical. Returns the number of tensors compared."""
    n = 0
    ref_final, got_final = ref / "adapters" / "final", got / "adapters" / "final"
    weights = sorted(p.relative_to(ref_final) for p in ref_final.rglob("*")
                     if p.suffix in (".safetensors", ".sft", ".pth", ".pt", ".bin"))
    assert weights and weights == sorted(p.relative_to(got_final) for p in got_final.rglob("*")
                                         if p.suffix in (".safetensors", ".sft", ".pth", ".pt", ".bin"))
    for rel in weights:
        a, b = tensors_of(ref_final / rel), tensors_of(got_final / rel)
        try:
            assert_same(a, b, str(rel))
        except AssertionError as e:
            raise AssertionError(f"{e} differs from the uninterrupted run {replay}") from None
        n += sum(1 for v in a.values() if isinstance(v, torch.Tensor))
    ra, rb = (load_torch(d / "checkpoints" / "last.ckpt", expected="a training checkpoint") for d in (ref, got))
    for key in ("global_step", "epoch", "state_dict", "optimizer_states", "lr_schedulers", "audiotrain"):
        try:
            assert_same(ra[key], rb[key], f"last.ckpt {key}")
        except AssertionError as e:
            raise AssertionError(f"{e} differs from the uninterrupted run {replay}") from None
    assert ra["global_step"] == MAX_STEPS
    n += len(ra["state_dict"])
    return n


@dataclass
class Chain:
    plan: list
    driven: Driven
    ref: Path       # the uninterrupted run's directory
    got: Path       # the interrupted run's directory
    seconds: float


def run_chain(plugin: str, root: Path, seed: int) -> Chain:
    """The uninterrupted run and, alongside it, the interrupted one (their start-ups, mostly on one core, overlap)."""
    t0 = time.perf_counter()
    plan = interruptions(random.Random(f"{plugin}:{seed}"))
    data = registry.get(plugin).example_data(root / "data", 4)
    ref_err = root / "reference.stderr"
    ref = subprocess.Popen(command(plugin, data, root / "ref", "tracking=none"), cwd=root, env=cli_env(root),
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(ref_err, "w"))
    try:
        driven = Driven(command(plugin, data, root / "driven"), root, root / "driven", seed)
        for step, fraction, sig in plan:
            driven.interrupt(step, fraction, sig)
        got = driven.finish()
        assert ref.wait(timeout=600) == 0, ref_err.read_text()[-3000:]
    finally:
        if ref.poll() is None:
            ref.kill()
            ref.wait()
    return Chain(plan, driven, run_dir_of(root / "ref"), got, time.perf_counter() - t0)


@pytest.fixture(scope="module")
def chains(request, tmp_path_factory) -> dict[str, Future]:
    """Every selected plugin's runs, all at once (threads driving subprocesses): the test of each waits for its own."""
    wanted = sorted({item.callspec.params["plugin"] for item in request.session.items
                     if item.originalname == "test_killed_and_stopped_runs_resume_to_the_same_weights"})
    seed = kill_seed()
    for p in wanted:
        plan = interruptions(random.Random(f"{p}:{seed}"))
        print(f"\n[kill-resume] {p}: {SEED_ENV}={seed} -> " + ", ".join(f"{sig.name}@{s}+{f:.2f}" for s, f, sig in plan),
              file=sys.__stderr__)
    pool = ThreadPoolExecutor(max_workers=max(1, len(wanted)))
    futures = {p: pool.submit(run_chain, p, tmp_path_factory.mktemp(f"kill_{p}"), seed) for p in wanted}
    yield futures
    pool.shutdown(wait=True)


@pytest.mark.slow
@pytest.mark.first
@pytest.mark.parametrize("plugin", sorted(registry.discover()))
def test_killed_and_stopped_runs_resume_to_the_same_weights(plugin, chains, record_property):
    chain = chains[plugin].result(timeout=1800)
    driven = chain.driven
    assert chain.got == run_dir_of(driven.log_dir)  # every attempt continued the one run directory
    # the kept-last-N bookkeeping survived the kills: no step file of a killed process is left behind (but the
    # step=N.ckpt a run resumed from, which Lightning never removes)
    kept = sorted(p.name for p in (chain.got / "checkpoints").glob("step=*.ckpt") if p.name not in driven.resumed_from)
    assert kept == [f"step={MAX_STEPS - 1}.ckpt", f"step={MAX_STEPS}.ckpt"], f"{kept} {driven.replay()}"
    compared = compare_runs(chain.ref, chain.got, driven.replay())
    done = [e.split()[0] for e in driven.events if " at step " in e]  # the signals that landed inside the run
    assert done.count("SIGKILL") >= KILLS and done.count("SIGTERM") >= 1, \
        f"too few interruptions landed in time: {done} {driven.replay()}"

    # every attempt continued one MLflow run, which ends FINISHED with a loss logged at every step
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{driven.cwd / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    run_id = (chain.got / "mlflow_run_id").read_text().strip()
    assert [r.info.run_id for r in runs] == [run_id], driven.replay()
    assert runs[0].info.status == "FINISHED"
    steps = {m.step for m in client.get_metric_history(run_id, "train/loss")}
    assert steps == set(range(1, MAX_STEPS + 1)), sorted(steps)
    leftovers = len(list(chain.got.glob("checkpoints/.*.tmp")))
    record_property(REPORT, f"[kill-resume] {plugin}: {len(chain.plan)} interruptions survived, {compared} tensors "
                            f"identical, {chain.seconds:.0f} s, {leftovers} temporary file(s) of killed writes left "
                            f"({SEED_ENV}={driven.seed}): {'; '.join(driven.events)}")


def test_resume_auto_takes_the_newest_complete_checkpoint_of_any_kind(tmp_path):
    """A kill between a step's ``step=N.ckpt`` and its ``last.ckpt`` leaves ``step=N.ckpt`` the newest complete file
    (and a temporary ``.last.ckpt.*.tmp``): resume=auto continues from it, not from the step before or from scratch."""
    ckpts = tmp_path / "exp" / "2026-01-01_00-00-00" / "checkpoints"
    ckpts.mkdir(parents=True)
    files = {name: ckpts / name for name in ("last.ckpt", "step=1.ckpt", "step=2.ckpt", ".last.ckpt.x1.tmp")}
    for i, (name, path) in enumerate(files.items()):
        path.write_bytes(b"x")
        os.utime(path, ns=(10**18 + i, 10**18 + i))  # written in this order
    assert find_latest_checkpoint(tmp_path, "exp") == files["step=2.ckpt"]
    (ckpts / "last.ckpt").unlink()
    (ckpts / "step=1.ckpt").unlink()
    (ckpts / "step=2.ckpt").unlink()  # only the half-written temporary file: nothing to resume
    assert find_latest_checkpoint(tmp_path, "exp") is None
    manual = ckpts / "manual-step=3.ckpt"
    manual.write_bytes(b"x")
    again = ckpts / "step=3-v1.ckpt"  # step 3 written again after a resume from step 2
    again.write_bytes(b"x")
    os.utime(manual, ns=(2 * 10**18, 2 * 10**18))
    assert find_latest_checkpoint(tmp_path, "exp") == manual
    os.utime(again, ns=(3 * 10**18, 3 * 10**18))
    assert find_latest_checkpoint(tmp_path, "exp") == again
    last = ckpts / "last.ckpt"  # written in the same clock tick as step 3's file (coarse mtimes): last.ckpt wins
    last.write_bytes(b"x")
    os.utime(last, ns=(3 * 10**18, 3 * 10**18))
    assert find_latest_checkpoint(tmp_path, "exp") == last
    versioned = ckpts / "last-v1.ckpt"  # Lightning's name for a resumed run's last.ckpt when its settings changed
    versioned.write_bytes(b"x")
    os.utime(versioned, ns=(4 * 10**18, 4 * 10**18))
    assert find_latest_checkpoint(tmp_path, "exp") == versioned


def test_resuming_a_run_that_had_reached_max_steps_says_so():
    """A kill after the last step's checkpoint (while the final adapter is written): the next resume=auto trains no
    step, and its closing message says why instead of a TypeError traceback on the missing loss trend."""
    from audiotrain.cli.train_entry import done_message

    summary = {"steps": 14, "loss_start_mean": None, "loss_end_mean": None, "run_dir": "/r", "adapter_dir": "/r/a",
               "val_loss": [], "train_fixed_loss": [(14, 1.04)]}
    text = done_message(summary)
    assert "Done.[/] 14 steps; none trained by this command (its checkpoint was already at step 14: raise " \
           "trainer.max_steps to train further)" in text
    assert "run directory: /r" in text
