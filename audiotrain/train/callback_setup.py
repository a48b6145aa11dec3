"""The callbacks of a training job, in the order they run each step: metrics, the non-finite step guard, progress,
the fixed-noise losses (``val/*`` on the held-out set, ``train_fixed/*`` on training examples), the audio eval,
adapters, checkpoints, samples, the fp16 loss-scale guard and live control (typed commands, control file, signals)."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from audiotrain.models.backbone import Backbone
from audiotrain.train import sweep_job
from audiotrain.train import callbacks as cb  # by module: a benchmark swaps in its own MetricsToTracker
from audiotrain.train.control import LiveControl, checkpoint_action
from audiotrain.train.data_setup import Data, val_every
from audiotrain.train.evaluate import AudioEval, can_render
from audiotrain.train.fixed_noise_loss import TRAIN_FIXED_EXAMPLES, FixedNoiseLoss
from audiotrain.train.model_setup import BuiltModel, adapter_writer
from audiotrain.train.nonfinite import NonFiniteGuard, advice
from audiotrain.train.sample_render import sample_renderer


@dataclass
class Callbacks:
    metrics: cb.MetricsToTracker
    train_fixed: FixedNoiseLoss
    val: FixedNoiseLoss | None
    audio_eval: AudioEval | None
    adapters: cb.AdapterSaver
    control: LiveControl
    nonfinite: NonFiniteGuard | None = None  # the skipped (NaN/Inf) steps
    all: list = field(default_factory=list)  # what the Trainer gets, in order


def build_callbacks(cfg: DictConfig, plugin: Any, model: BuiltModel, module: Any, data: Data, tracker: Any,
                    run_dir: Path, *, zero: bool, job: Any, precision: str) -> Callbacks:
    backbone = model.backbone
    eval_every = int(cfg.trainer.get("eval_every_n_steps") or cfg.trainer.every_n_train_steps)
    draws = int(cfg.trainer.val_noise_draws)
    train_fixed = FixedNoiseLoss("train_fixed", eval_every, data.train, draws, tracker, limit=TRAIN_FIXED_EXAMPLES)
    val = FixedNoiseLoss("val", val_every(cfg), data.val, draws, tracker) if data.val is not None else None
    audio_eval = AudioEval(eval_every, cfg, data.val or data.train, tracker, run_dir) \
        if cfg.trainer.get("eval_audio") and can_render(backbone) else None
    metrics = cb.MetricsToTracker(tracker)
    adapters = cb.AdapterSaver(int(cfg.trainer.every_n_train_steps), adapter_writer(model, plugin, cfg),
                            run_dir / "adapters", tracker, keep=int(cfg.trainer.get("keep_last_adapters") or 0))
    headline = val or train_fixed  # what the typed `eval` command reports

    def eval_action(trainer, pl_module) -> str:
        headline._run(trainer, pl_module)
        step, value = headline.values[-1]
        return f"{headline.prefix}/loss {value:.4f}"

    def export_action(trainer, _module):
        return adapters._save(f"manual_step_{trainer.global_step}", trainer.global_step) if trainer.is_global_zero else None

    control = LiveControl(stdin=_stdin_enabled(cfg), control_file=run_dir / "control", tracker=tracker,
                          run_dir=run_dir, actions={"save": checkpoint_action(run_dir / "checkpoints"),
                                                    "eval": eval_action, "export": export_action},
                          handle_signals=bool(cfg.trainer.signal_handlers),
                          stop_file=sweep_job.stop_file(job) if job is not None else None)
    guard = NonFiniteGuard(int(cfg.trainer.get("max_nonfinite_steps", 10)), run_dir, tracker, advice(cfg, precision),
                           every=int(cfg.trainer.every_n_train_steps))
    out = [
        metrics,  # first: it closes the step's metrics that the others read
        guard,  # before the savers: a skipped step saves nothing, a diverged run stops before anything is written
        # parallel sweep jobs share one terminal: no interleaved bars, their start and end lines say enough
        cb.StepProgress(int(cfg.trainer.max_steps)) if cfg.trainer.progress_bar and zero
        and (job is None or job.n_parallel == 1) else None,
        train_fixed,
        val,
        audio_eval,
        adapters if zero else None,
        cb.StepCheckpoint(dirpath=str(run_dir / "checkpoints"), filename="step={step}", auto_insert_metric_name=False,
                       every_n_train_steps=int(cfg.trainer.every_n_train_steps) or None,
                       save_top_k=int(cfg.trainer.keep_last_n), monitor="step", mode="max", save_last=True),
    ]
    if int(cfg.trainer.every_plot_step) > 0 and type(backbone).sample_audio is not Backbone.sample_audio:
        out.append(cb.SampleRenderer(int(cfg.trainer.every_plot_step), sample_renderer(cfg, plugin, module, data.train),
                                  run_dir / "samples", tracker))
    if precision == "16-mixed":  # fp16 loss-scale floor guard (every plugin): warn, then checkpoint and stop
        from audiotrain.train.loss_scale import LossScaleGuard

        out.append(LossScaleGuard(float(cfg.precision.loss_scale_floor), int(cfg.precision.loss_scale_patience),
                                  run_dir / "checkpoints", tracker))
    out.append(control)
    return Callbacks(metrics, train_fixed, val, audio_eval, adapters, control, guard, [c for c in out if c is not None])


def _stdin_enabled(cfg: DictConfig) -> bool:
    """Typed commands (save, quit, lr X, eval, export) are read from a terminal; ``trainer.stdin_control``
    forces it on (e.g. a pipe) or off. Jobs without a terminal use ``<run_dir>/control``."""
    forced = cfg.trainer.get("stdin_control")
    if forced is not None:
        return bool(forced)
    return sys.stdin is not None and sys.stdin.isatty()
