"""ai-voice-cloning's "Generate Configuration" and "Validate Training Configuration", as pure functions.

AIVC (spec tortoise.md §1) turns its UI fields into a DL-Art-School YAML with a few formulas and silently adjusts
them. audiotrain keeps its fields and defaults (:class:`Settings`), applies the same rules in the same order
(:func:`validate`, §1.3) but says every change as a sentence, adds the check DLAS lacks (a batch that does not
split into the accumulation chunks: DLAS's ``torch.chunk`` then yields fewer chunks and training crashes), and
computes the plan of §1.2 (:func:`plan`: steps, steps per epoch, milestones, save and validation rates).

How the fields map onto audiotrain's keys (:func:`settings_from`, :func:`overrides`): AIVC's batch size is the
examples per optimizer step, split into ``gradient_accumulation`` chunks; audiotrain counts the chunk:
``dataset.batch_size`` = batch / accumulation and ``trainer.accumulate_grad_batches`` = accumulation — the same
gradient as DLAS's chunks. Epoch-based rates become optimizer steps with AIVC's own rounding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

#: AIVC's MultiStep schedule, in epochs
DEFAULT_SCHEDULE = (2, 4, 9, 18, 25, 33, 50)


class SettingsError(ValueError):
    """Settings no rule can repair (an empty dataset): the message is one sentence with the fix."""


@dataclass(frozen=True)
class Settings:
    """AIVC's training fields with its defaults (src/webui.py)."""

    epochs: int = 500
    learning_rate: float = 1e-5
    mel_lr_ratio: float = 1.0           # the mel CE loss weight
    text_lr_ratio: float = 0.01         # the text CE loss weight
    lr_scheme: str = "multistep"        # "multistep" (MultiStepLR) | "cosine" (CosineAnnealingLR_Restart)
    lr_schedule: tuple[int, ...] = DEFAULT_SCHEDULE  # MultiStep milestones, in epochs
    lr_restarts: int = 4                # cosine restarts
    batch_size: int = 128               # examples per optimizer step
    gradient_accumulation: int = 4      # chunks a batch is split into (DLAS mega_batch_factor)
    save_rate: int = 5                  # epochs between saves
    validation_rate: int = 5            # epochs between validations
    half_precision: bool = False
    bitsandbytes: bool = True
    validation_enabled: bool = False
    workers: int = 2
    gpus: int = 1
    resume_state: str = ""
    stop_at: str = "aivc"               # "aivc": the iterations AIVC shows | "dlas": what DLAS's epoch loop trains


@dataclass(frozen=True)
class Plan:
    """What §1.2's formulas make of the settings for ``lines`` training lines."""

    lines: int
    iterations: int                  # optimizer steps: ceil(epochs × ceil(lines / batch))
    steps_per_epoch: int             # int(iterations / epochs)
    save_every: int                  # steps between saves
    validate_every: int              # steps between validations
    milestones: list[int] = field(default_factory=list)      # MultiStep, in steps
    restart_period: int = 0          # cosine: steps per cycle
    restart_weights: list[float] = field(default_factory=list)
    validation_batch_size: int = 0   # 0: no validation
    dlas_epochs: int = 0             # DLAS's loop: epochs 0..ceil(iterations / ceil(lines / batch)), inclusive
    dlas_steps: int = 0              # ... of floor(lines / batch) steps each (its loader drops the last batch)

    def stop(self, s: "Settings") -> tuple[int, int]:
        """(steps, epochs) the run trains: AIVC's count, or DLAS's loop with ``stop_at="dlas"``."""
        if s.stop_at == "dlas":
            return self.dlas_steps, self.dlas_epochs
        return self.iterations, int(s.epochs)

    def describe(self, s: Settings) -> str:
        """AIVC's summary line."""
        text = (f"For {s.epochs} epochs with {self.lines} lines in batches of {s.batch_size}, iterating for "
                f"{self.iterations} steps ({self.steps_per_epoch} steps per epoch)")
        if s.stop_at == "dlas":
            text += (f"; as DLAS's loop trains it (model.stop_at=dlas): {self.dlas_epochs} epochs of "
                     f"{self.lines // max(1, int(s.batch_size))} steps, {self.dlas_steps} steps")
        return text


def _vram_cap(vram_gib: float) -> int:
    """AIVC's most examples per chunk for a GPU memory size (GiB, all GPUs together)."""
    for k, cap in ((70, 128), (32, 64), (16, 8), (8, 4), (6, 2)):
        if vram_gib > k - 1:
            return cap
    return 1


def _divisor_below(batch: int, accum: int) -> int:
    """The largest accumulation <= ``accum`` that splits ``batch`` evenly (1 always does)."""
    return next(g for g in range(min(accum, batch), 0, -1) if batch % g == 0)


def validate(s: Settings, lines: int, validation_lines: int = 0, device_count: int = 0,
             vram_gib: float | None = None, resume_exists: bool = True) -> tuple[Settings, list[str]]:
    """AIVC's rules of §1.3, in order, each change said as a sentence; then the chunk check.

    ``device_count`` GPUs of ``vram_gib`` GiB each (0 / None on a CPU: the VRAM cap is not applied)."""
    msgs: list[str] = []
    if lines <= 0:
        raise SettingsError("The dataset is empty (train.txt has no line): prepare it first with "
                            "`audiotrain tortoise-prepare voices/NAME`.")
    b, g = int(s.batch_size), int(s.gradient_accumulation)
    if b < 1:
        raise SettingsError(f"batch size {b} must be at least 1.")
    if b > lines:
        msgs.append(f"batch {b} is larger than the {lines} lines: using {lines}")
        b = lines
    if g <= 0:
        msgs.append(f"gradient accumulation {g} must be at least 1: using 1")
        g = 1
    if b / g < 2:
        new = max(1, int(b / 2))
        if new != g:
            msgs.append(f"gradient accumulation {g} leaves chunks of fewer than 2 of the batch's {b}: using {new}")
        g = new
    elif b % g:
        new = max(1, g - b % g)
        msgs.append(f"gradient accumulation {g} does not divide the batch of {b}: using {new}")
        g = new
    gpus = int(s.gpus)
    if device_count > 0:
        if gpus > device_count:
            msgs.append(f"{gpus} GPUs asked for, {device_count} present: using {device_count}")
            gpus = device_count
        if gpus > 1:
            msgs.append(f"training on {gpus} GPUs is EXPERIMENTAL in AIVC")
        if b % gpus:
            new = max(1, b - b % gpus)
            msgs.append(f"batch {b} does not split over {gpus} GPUs: using {new}")
            b = new
        if vram_gib:
            cap = _vram_cap(float(vram_gib) * gpus)
            if int(b / g) > cap:
                new = max(1, int(b / cap))
                msgs.append(f"chunks of {int(b / g)} are more than {float(vram_gib) * gpus:g} GiB of GPU memory "
                            f"holds (at most {cap}): gradient accumulation {new}")
                g = new
    else:
        gpus = max(1, gpus)
    epochs = int(s.epochs)
    save, val = int(s.save_rate), int(s.validation_rate)
    if save > epochs:
        msgs.append(f"save frequency {save} epochs is more than the {epochs} epochs: using {epochs}")
        save = epochs
    if val > epochs:
        msgs.append(f"validation frequency {val} epochs is more than the {epochs} epochs: using {epochs}")
        val = epochs
    resume = s.resume_state
    if resume and not resume_exists:
        msgs.append(f"resume state {resume} does not exist: starting from the source model")
        resume = ""
    half = bool(s.half_precision)
    if s.bitsandbytes and half:
        msgs.append("half precision and bitsandbytes are both on: half precision turned off, as AIVC does")
        half = False
    # the check DLAS lacks: torch.chunk splits a batch of b into ceil(b / ceil(b / g)) chunks, fewer than g when
    # the batch does not divide (6 into 4 -> 3), and the last chunk's index then fails
    if b % g:
        new = _divisor_below(b, g)
        msgs.append(f"a batch of {b} does not split into {g} equal chunks (DLAS would crash on it): gradient "
                    f"accumulation {new}, or a batch of {b - b % g} or {b + g - b % g}")
        g = new
    out = replace(s, batch_size=b, gradient_accumulation=g, gpus=gpus, save_rate=save, validation_rate=val,
                  resume_state=resume, half_precision=half)
    p = plan(out, lines, validation_lines)
    msgs.append(p.describe(out))
    return out, msgs


def restart_weights(restarts: int) -> list[float]:
    """(R−k−1)/R for k < R, the last replaced by half of the one before (R=4 → 0.75, 0.5, 0.25, 0.125)."""
    w = [(restarts - k - 1) / restarts for k in range(restarts)]
    if restarts >= 2:
        w[-1] = w[-2] / 2
    return w


def plan(s: Settings, lines: int, validation_lines: int = 0) -> Plan:
    """§1.2's formulas: iterations, steps per epoch, save/validation rates in steps, the schedule in steps."""
    b, epochs = max(1, int(s.batch_size)), max(1, int(s.epochs))
    iterations = math.ceil(epochs * math.ceil(lines / b))
    ipe = iterations / epochs
    save_every = max(1, int(s.save_rate * ipe))
    validate_every = max(1, int(s.validation_rate * ipe))
    steps = int(ipe)
    val_batch = int(b / max(1, int(s.gradient_accumulation)))
    val_batch = min(val_batch, validation_lines) if s.validation_enabled and validation_lines > 0 else 0
    milestones: list[int] = []
    period, weights = 0, []
    if s.lr_scheme == "multistep":
        milestones = [int(steps * e) for e in s.lr_schedule]
    else:
        restarts = max(1, int(s.lr_restarts))
        period = steps * int(epochs / restarts)
        weights = restart_weights(restarts)
    dlas_epochs = math.ceil(iterations / math.ceil(lines / b)) + 1
    return Plan(lines, iterations, steps, save_every, validate_every, milestones, period, weights, val_batch,
                dlas_epochs, dlas_epochs * (lines // b))


def settings_from(cfg: Any) -> Settings:
    """The AIVC fields of a composed audiotrain config (the inverse of :func:`overrides`)."""
    t, m, sch, ds = cfg.trainer, cfg.model, cfg.scheduler, cfg.dataset
    accum = int(t.accumulate_grad_batches)
    name = str(sch.name)
    return Settings(
        epochs=int(t.max_epochs), learning_rate=float(cfg.optimizer.lr),
        mel_lr_ratio=float(m.mel_loss_weight), text_lr_ratio=float(m.text_loss_weight),
        lr_scheme="multistep" if name == "multistep" else "cosine",
        lr_schedule=tuple(int(e) for e in (sch.get("milestones_epochs") or DEFAULT_SCHEDULE)),
        lr_restarts=int(sch.get("restarts") or 4), batch_size=int(ds.batch_size) * accum,
        gradient_accumulation=accum, save_rate=int(m.get("save_every_epochs") or 5),
        validation_rate=int(m.get("validate_every_epochs") or 5),
        half_precision=str(cfg.precision.name) in ("16-mixed", "16-true"),
        bitsandbytes=str(cfg.optimizer.get("name", "adamw")) == "adamw8bit",
        validation_enabled=bool(m.get("validation", False)), workers=int(ds.num_workers)
        if str(ds.num_workers).isdigit() else 2, stop_at=str(m.get("stop_at") or "aivc"))


def overrides(s: Settings, p: Plan) -> dict[str, Any]:
    """The audiotrain keys that carry validated settings and their plan."""
    out: dict[str, Any] = {
        "trainer.max_steps": p.stop(s)[0], "trainer.max_epochs": p.stop(s)[1], "optimizer.lr": float(s.learning_rate),
        "model.mel_loss_weight": float(s.mel_lr_ratio), "model.text_loss_weight": float(s.text_lr_ratio),
        "dataset.batch_size": int(s.batch_size) // int(s.gradient_accumulation),
        "trainer.accumulate_grad_batches": int(s.gradient_accumulation),
        "trainer.every_n_train_steps": p.save_every, "trainer.val_check_interval": p.validate_every,
    }
    if not s.half_precision:
        out["precision.name"] = "32"  # only written when it changes (the caller compares)
    if s.lr_scheme == "multistep":
        out["scheduler.milestones"] = list(p.milestones)
    else:
        out["scheduler.period_steps"] = p.restart_period
        out["scheduler.restarts"] = int(s.lr_restarts)
    return out
