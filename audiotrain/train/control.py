"""Live control of a running training job: commands from stdin or a control file, and clean stops.

Commands (one per line; ``CMD@STEP`` runs CMD once ``trainer.global_step`` reaches STEP):

* ``save`` - checkpoint now (the injected ``save`` action; by default
  ``<run_dir>/checkpoints/manual-step=N.ckpt``).
* ``quit`` - save, then stop cleanly (``trainer.should_stop = True``).
* ``lr X`` - set the base lr to X now and keep it; each param group keeps its lr multiplier (see ``set_lr``).
* ``eval`` / ``export`` - call the injected ``eval`` / ``export`` action.
* ``help`` - list the commands.

Where commands come from:

* stdin (``stdin=True``, or any readable fd / object with ``fileno()``): polled with a selector and a
  zero timeout, read with ``os.read`` so a partial line never blocks; off when stdin is closed, not
  selectable (e.g. pytest's capture, Windows) or at EOF (``/dev/null`` in CI). A terminal is read
  only while the job is in the foreground (a background read would stop the process).
* a control file (``echo save >> <run_dir>/control``): consumed once by rename-and-read - the file is
  renamed to ``control.reading``, read, and removed at the next poll after re-reading anything a
  writer appended to the old handle in between; a writer that appends later creates a new file.
  A ``control.reading`` left by a killed job is discarded at start (it was already read).

Commands are checked at every training batch end that follows an optimizer step (not mid gradient
accumulation). In DDP only global rank 0 reads; the lines are broadcast to every rank with
``torch.distributed.broadcast_object_list`` so all ranks act at the same step (the actions, such as
``trainer.save_checkpoint``, are collective). Pending ``CMD@STEP`` commands are kept in the
checkpoint (``state_dict``) and survive a resume.

SIGTERM and Ctrl-C (SIGINT) - or, in a sweep, the sweep's ``STOP`` file appearing - : handlers installed at
train start set a flag; at the next step end the job saves a checkpoint and stops cleanly; a second Ctrl-C stops at once (KeyboardInterrupt). Once
training has ended, a signal waits until the run's last files (final adapter, samples, tracker status, summary) are
written (``finishing``); the previous handlers are restored after them. ``handle_signals=False`` (``trainer.signal_handlers=false``, as
in-process tests train) installs none, nor lets Lightning install its SIGTERM handler. DataLoader workers
should use ``worker_signals.quiet_worker_init`` (else a signal sent to the whole process group - Ctrl-C,
``timeout``, SLURM - kills them before the main process can save).

Every action and every rejected command is one line on the terminal, a line in
``<run_dir>/control.log`` and the tracker's ``control.last`` tag (plus the metric ``control/lr``
when the lr changes). Bad commands are warnings, never crashes.
"""
from __future__ import annotations

import math
import os
import selectors
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
from tqdm.auto import tqdm

Action = Callable[[L.Trainer, L.LightningModule], Any]
COMMANDS = ("save", "quit", "lr", "eval", "export", "help")
HELP = "commands: save | quit | lr X | eval | export | help; add @STEP to run one at a later step"


@dataclass
class Command:
    """One parsed command: ``name``, its number (``lr``), the step it waits for, the line as typed."""

    name: str
    value: float | None = None
    at: int | None = None
    text: str = ""


def parse_command(line: str) -> Command:
    """``"lr 3e-4@100"`` -> ``Command("lr", 3e-4, 100)``; raises ``ValueError`` with a one-line reason."""
    text = line.strip()
    body, sep, step = text.partition("@")
    at = None
    if sep:
        try:
            at = int(step.strip())
        except ValueError:
            raise ValueError(f"'{text}': the step after @ must be an integer") from None
        if at < 0:
            raise ValueError(f"'{text}': the step after @ must be >= 0")
    words = body.split()
    if not words or words[0].lower() not in COMMANDS:
        raise ValueError(f"unknown command '{text}' ({HELP})")
    name = words[0].lower()
    if name == "lr":
        if len(words) != 2:
            raise ValueError(f"'{text}': use lr X, e.g. lr 1e-4")
        try:
            value = float(words[1])
        except ValueError:
            raise ValueError(f"'{text}': {words[1]!r} is not a number") from None
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"'{text}': the lr must be a positive number")
        return Command(name, value, at, text)
    if len(words) != 1:
        raise ValueError(f"'{text}': {name} takes no argument")
    return Command(name, None, at, text)


def set_lr(trainer: L.Trainer, lr: float) -> None:
    """The base lr becomes ``lr`` now, and the scheduler keeps it: each param group's lr becomes
    ``lr x`` its ``lr_mult`` (1 when the group has none), so groups keep their ratios.

    A step scheduler recomputes ``lr = base_lr x factor(step)`` on its next step, which would undo a
    plain param-group change. So each scheduler's ``base_lrs`` is rescaled by ``new lr / current lr``:
    a constant schedule then stays at ``lr``, a decaying one continues its shape from ``lr``. The
    new ``base_lrs`` are part of the scheduler state, so the change also survives a resume. (When the
    current factor is 0, e.g. the first warmup step, the base lr is set to the new lr instead.)
    """
    def target(group: dict) -> float:
        return lr * float(group.get("lr_mult", 1.0))

    for cfg in trainer.lr_scheduler_configs:
        sched = cfg.scheduler
        base = getattr(sched, "base_lrs", None)
        if base is None:
            continue
        for i, group in enumerate(sched.optimizer.param_groups):
            current, new = float(group["lr"]), target(group)
            base[i] = new * base[i] / current if current > 0 and base[i] > 0 else new
    for opt in trainer.optimizers:
        for group in opt.param_groups:
            group["lr"] = target(group)
    for cfg in trainer.lr_scheduler_configs:
        if hasattr(cfg.scheduler, "_last_lr"):
            cfg.scheduler._last_lr = [g["lr"] for g in cfg.scheduler.optimizer.param_groups]


def checkpoint_action(ckpt_dir: str | Path, prefix: str = "manual") -> Action:
    """The default ``save`` action: ``trainer.save_checkpoint(<ckpt_dir>/<prefix>-step=N.ckpt)``."""
    ckpt_dir = Path(ckpt_dir)

    def save(trainer: L.Trainer, pl_module: L.LightningModule) -> Path:
        path = ckpt_dir / f"{prefix}-step={trainer.global_step}.ckpt"
        trainer.save_checkpoint(str(path))
        return path

    return save


class _LineReader:
    """Non-blocking line reader over a file descriptor (stdin, a pipe); ``None`` fd = off."""

    def __init__(self, stream: Any):
        self.fd: int | None = None
        self.buffer = b""
        self.selector: selectors.BaseSelector | None = None
        try:
            fd = stream if isinstance(stream, int) else stream.fileno()
            os.fstat(fd)
        except (AttributeError, OSError, ValueError):
            return  # closed, None, or a replaced stream without a descriptor (pytest capture)
        for make in (selectors.DefaultSelector, selectors.SelectSelector):  # epoll refuses regular files
            try:
                sel = make()
                sel.register(fd, selectors.EVENT_READ)
                self.fd, self.selector = fd, sel
                return
            except (OSError, ValueError):
                continue

    active = property(lambda self: self.fd is not None)

    def _foreground(self) -> bool:
        try:
            return not os.isatty(self.fd) or os.tcgetpgrp(self.fd) == os.getpgrp()
        except OSError:
            return True

    def read_lines(self) -> list[str]:
        if self.fd is None or not self._foreground():
            return []
        data = b""
        try:
            while self.selector.select(timeout=0):
                chunk = os.read(self.fd, 65536)
                if not chunk:  # EOF: the writer closed; nothing more will come
                    self.close()
                    break
                data += chunk
        except OSError:
            self.close()
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        if self.fd is None and self.buffer:
            lines, self.buffer = lines + [self.buffer], b""
        return [ln.decode("utf-8", "replace") for ln in lines]

    def close(self) -> None:
        if self.selector is not None:
            self.selector.close()
        self.fd, self.selector = None, None


class LiveControl(L.Callback):
    """Reads commands during training and acts on them; see the module docstring.

    ``actions`` maps ``save`` / ``eval`` / ``export`` to callables ``(trainer, pl_module) -> result``
    (a returned path is logged). Without a ``save`` action, ``run_dir`` gives the default one.
    """

    def __init__(self, stdin: Any = False, control_file: str | Path | None = None, tracker: Any = None,
                 actions: dict[str, Action] | None = None, run_dir: str | Path | None = None,
                 handle_signals: bool = True, stop_file: str | Path | None = None):
        self.stdin = stdin
        self.stop_file = Path(stop_file) if stop_file is not None else None  # exists → save and stop (sweeps)
        self.control_file = Path(control_file) if control_file is not None else None
        self.tracker = tracker
        self.actions = dict(actions or {})
        self.run_dir = Path(run_dir) if run_dir is not None else (
            self.control_file.parent if self.control_file is not None else None)
        if "save" not in self.actions and self.run_dir is not None:
            self.actions["save"] = checkpoint_action(self.run_dir / "checkpoints")
        self.log_file = self.run_dir / "control.log" if self.run_dir is not None else None
        self.handle_signals = handle_signals
        self.pending: list[Command] = []
        self._reader: _LineReader | None = None
        self._reading: tuple[Path, int] | None = None
        self._last_step = -1
        self._signal: str | None = None
        self._stopped_by_signal = False
        self._saved_at = -1
        self._previous: dict[int, Any] = {}
        self.stopped_at: int | None = None  # the step at which quit or a signal stopped training early
        self._finishing = False  # training ended; the run's last files are being written
        self.late_signal: str | None = None  # a SIGTERM/Ctrl-C that arrived while they were

    # ---- Lightning hooks --------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Lightning 2 replaces SIGTERM's handler at every fit and has no public switch: with handle_signals off
        # the process's handlers stay exactly as they were (tests/core/test_train_signals.py checks it)
        connector = getattr(trainer, "_signal_connector", None)
        if not self.handle_signals and connector is not None:
            connector.register_signal_handlers = lambda: None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = trainer.global_step
        if trainer.is_global_zero:
            stream = sys.stdin if self.stdin is True else (self.stdin if self.stdin is not False else None)
            self._reader = _LineReader(stream) if stream is not None else None
            if self.control_file is not None:
                self._reading_path().unlink(missing_ok=True)
        # after Lightning registered its SIGTERM handler (ours replaces it while training; Lightning
        # restores the pre-fit handlers at its teardown, whichever way fit ends)
        self._install(signal.SIGTERM)
        self._install(signal.SIGINT)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step == self._last_step:
            return  # mid gradient accumulation: act after the optimizer step
        self._last_step = step
        lines = self._poll() if trainer.is_global_zero else []
        lines = self._broadcast(trainer, lines)
        for line in lines:
            if line.strip() and not line.lstrip().startswith("#"):
                self._accept(trainer, line, step)
        due = [c for c in self.pending if c.at is None or c.at <= step]
        self.pending = [c for c in self.pending if not (c.at is None or c.at <= step)]
        for cmd in sorted(due, key=lambda c: c.at or 0):
            self._run(trainer, pl_module, cmd, step)
        if self.stop_file is not None and self._signal is None and trainer.is_global_zero and self.stop_file.exists():
            self._signal = "the sweep's stop request"  # another job of the sweep was stopped: stop cleanly too
        stop = self._signal is not None
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop and not self._stopped_by_signal:
            self._stopped_by_signal = True
            self._note(trainer, step, f"{self._signal or 'a signal on another rank'} received: saving and stopping")
            self._save_and_stop(trainer, pl_module, step)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the handlers stay while the final adapter, samples and summary are written (``finishing``)
        self._finishing = True
        self._close_readers()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._cleanup()

    def state_dict(self) -> dict[str, Any]:
        return {"pending": [c.text for c in self.pending if c.at is not None]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pending = [parse_command(t) for t in state_dict.get("pending", [])]

    # ---- reading ----------------------------------------------------------------------------
    def _reading_path(self) -> Path:
        return self.control_file.with_name(self.control_file.name + ".reading")

    def _poll(self) -> list[str]:
        lines = self._reader.read_lines() if self._reader is not None else []
        if self.control_file is None:
            return lines
        try:
            if self._reading is not None:  # late appends to the renamed file, then it goes
                path, offset = self._reading
                with open(path, "rb") as f:
                    f.seek(offset)
                    lines += f.read().decode("utf-8", "replace").splitlines()
                path.unlink(missing_ok=True)
                self._reading = None
            if os.path.exists(self.control_file):  # every step: a plain stat, not pathlib's
                tmp = self._reading_path()
                os.replace(self.control_file, tmp)
                data = tmp.read_bytes()
                self._reading = (tmp, len(data))
                lines += data.decode("utf-8", "replace").splitlines()
        except OSError as e:
            self._note(None, None, f"warning: cannot read {self.control_file}: {e}")
        return lines

    @staticmethod
    def _broadcast(trainer: L.Trainer, lines: list[str]) -> list[str]:
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            box = [lines]
            torch.distributed.broadcast_object_list(box, src=0)
            return list(box[0])
        return lines

    # ---- acting -----------------------------------------------------------------------------
    def _accept(self, trainer: L.Trainer, line: str, step: int) -> None:
        try:
            cmd = parse_command(line)
        except ValueError as e:
            self._note(trainer, step, f"warning: {e}")
            return
        if cmd.at is not None and cmd.at > step:
            self.pending.append(cmd)
            self._note(trainer, step, f"scheduled '{cmd.text}'")
        else:
            if cmd.at is not None:
                cmd.text += f" (step {cmd.at} had passed)"
            self.pending.append(cmd)

    def _run(self, trainer: L.Trainer, pl_module: L.LightningModule, cmd: Command, step: int) -> None:
        if cmd.name == "help":
            self._note(trainer, step, HELP)
        elif cmd.name == "lr":
            set_lr(trainer, cmd.value)
            self._note(trainer, step, f"{cmd.text} -> lr {cmd.value:g}")
            if self.tracker is not None and trainer.is_global_zero:
                self._track(lambda: self.tracker.log_metrics({"control/lr": cmd.value}, step))
        elif cmd.name == "quit":
            self._note(trainer, step, f"{cmd.text} -> saving and stopping")
            self._save_and_stop(trainer, pl_module, step)
        else:
            if cmd.name == "save":
                self._saved_at = step
            self._call(trainer, pl_module, cmd.name, cmd.text, step)

    def _call(self, trainer: L.Trainer, pl_module: L.LightningModule, name: str, text: str, step: int) -> bool:
        action = self.actions.get(name)
        if action is None:
            self._note(trainer, step, f"warning: '{text}': no {name} action in this run")
            return False
        try:
            result = action(trainer, pl_module)
        except Exception as e:  # an action failing (disk full, ...) must not kill the run
            self._note(trainer, step, f"warning: '{text}' failed: {type(e).__name__}: {e}")
            return False
        self._note(trainer, step, f"{text} -> {result}" if isinstance(result, (str, Path)) else f"{text} done")
        return True

    def _save_and_stop(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        if self._saved_at != step:  # save, quit and a signal at the same step: one checkpoint
            self._saved_at = step
            self._call(trainer, pl_module, "save", "save", step)
        trainer.should_stop = True
        self.stopped_at = step

    # ---- signals ----------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._finishing:  # nothing left to stop: the last files are written, then the run exits
            if self.late_signal is None:
                self.late_signal = signal.Signals(signum).name
                sys.stderr.write(f"[control] {self.late_signal} received after training ended: the run's last "
                                 f"files are written first, then it exits\n")
            return
        if self._signal is not None and signum == signal.SIGINT:
            self._restore_signals()
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        self._signal = signal.Signals(signum).name

    def _install(self, sig: int) -> None:
        main = threading.current_thread() is threading.main_thread()  # signal.signal works only there
        if not self.handle_signals or sig in self._previous or not main:
            return
        self._previous[sig] = signal.getsignal(sig)
        signal.signal(sig, self._on_signal)

    def _restore_signals(self) -> None:
        for sig, handler in self._previous.items():
            try:
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
            except (ValueError, OSError):
                pass
        self._previous = {}

    @contextmanager
    def finishing(self):
        """Around what a run writes after ``fit`` returns (the tracker's end, the summary): a SIGTERM or Ctrl-C
        then waits until they are written (Lightning's teardown has put the pre-fit handlers back, so they are
        taken again here). On leaving, the previous handlers return; a signal that arrived is passed on to a
        previous handler of Python's own (a sweep's stop request) - with none, the run has ended anyway."""
        self._finishing = True
        for sig in (signal.SIGTERM, signal.SIGINT):
            if sig in self._previous and signal.getsignal(sig) != self._on_signal:
                del self._previous[sig]  # Lightning's teardown put the pre-fit handler back: take it again
            self._install(sig)
        try:
            yield
        finally:
            previous = dict(self._previous)
            self._restore_signals()
            late = self.late_signal
            handler = previous.get(signal.Signals[late]) if late else None
            if callable(handler):
                handler(signal.Signals[late], None)

    def _cleanup(self) -> None:
        self._restore_signals()
        self._close_readers()

    def _close_readers(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._reading is not None:
            self._reading[0].unlink(missing_ok=True)
            self._reading = None

    # ---- logging ----------------------------------------------------------------------------
    def _note(self, trainer: L.Trainer | None, step: int | None, text: str) -> None:
        if trainer is not None and not trainer.is_global_zero:
            return
        where = f"step {step}: " if step is not None else ""
        tqdm.write(f"[control] {where}{text}", file=sys.stderr)  # above a progress bar, if one is drawn
        if self.log_file is not None:
            try:
                self.log_file.parent.mkdir(parents=True, exist_ok=True)
                with open(self.log_file, "a", encoding="utf-8") as f:
                    f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {where}{text}\n")
            except OSError:
                pass
        if self.tracker is not None:
            self._track(lambda: self.tracker.set_tags({"control.last": f"{where}{text}"[:5000]}))

    @staticmethod
    def _track(call: Callable[[], Any]) -> None:
        try:
            call()
        except Exception as e:  # the tracking server being down must not stop training
            tqdm.write(f"[control] tracker error: {type(e).__name__}: {e}", file=sys.stderr)
