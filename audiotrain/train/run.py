"""One training job, end to end: job → data → model + adapter → tracking → callbacks → Lightning → summary."""
from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig

from audiotrain.data.dataset import AudioDataset, collate_passthrough
from audiotrain.data.sampler import ResumableSampler
from audiotrain.train import run_dir as rd
from audiotrain.train.callback_setup import Callbacks, build_callbacks
from audiotrain.train.data_setup import load_data
from audiotrain.train.job_setup import start_job
from audiotrain.train.model_setup import build_model
from audiotrain.train.module import TrainModule
from audiotrain.train.nonfinite import TrainingDiverged
from audiotrain.train.tracking_setup import start_tracking, write_run_files
from audiotrain.train.trainer_setup import build_trainer, fit


def train(cfg: DictConfig, overrides: list[str] | None = None) -> dict[str, Any]:
    """Run one training job. Returns a summary (run dir, adapter dir, MLflow run id, losses)."""
    overrides = list(overrides or [])
    job = start_job(cfg, "train")
    run_dir, plugin = job.run_dir, job.plugin
    data = load_data(cfg, plugin, run_dir, job.accelerator, save_report=job.zero,
                     brief=job.sweep is not None and job.sweep.num > 0)
    adjust_to_data(cfg, plugin, data)
    from audiotrain.config.validate import lightning_precision

    precision = lightning_precision(cfg.precision.name)  # the plugin's rules may have changed it
    sampler, loader = build_loader(cfg, data.train, job.accelerator)

    model = build_model(cfg, plugin)
    module = TrainModule(model.backbone, plugin, cfg, data.encoders, sampler, adapter_only=model.adapter_only)
    module.dataset = data.train
    module.steps_per_epoch = max(1, len(loader) // max(1, int(cfg.trainer.accumulate_grad_batches)))
    if job.zero and not (job.sweep is not None and job.sweep.num > 0):
        from audiotrain.train.console import console
        from audiotrain.train.run_length import length_line

        console.print(length_line(cfg, len(data.train), module.steps_per_epoch, overrides), highlight=False)

    tracker = None
    if job.zero:
        write_run_files(cfg, run_dir, overrides)
        tracker = start_tracking(cfg, plugin, run_dir, overrides, data.report_text(), ckpt=job.ckpt, job=job.sweep,
                                 params={"lora.trainable_params": model.trainable, **model.plan.params})
    cbs = build_callbacks(cfg, plugin, model, module, data, tracker, run_dir, zero=job.zero, job=job.sweep,
                          precision=precision)
    trainer = build_trainer(cfg, job.accelerator, precision, cbs.all, run_dir)
    status = "FAILED"
    try:
        try:
            fit(trainer, module, loader, job.ckpt)
            status = "KILLED" if cbs.control.stopped_at is not None else "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        except TrainingDiverged as exc:  # a result, not a crash: a re-run of the same sweep skips this job
            if job.zero:
                rd.summary_file(run_dir, {"run_dir": str(run_dir), "completed": True, "diverged": str(exc),
                                          "steps": trainer.global_step, "nonfinite_steps": cbs.nonfinite.total,
                                          "last_metrics": {}})
            raise
    except BaseException:
        if tracker is not None:
            tracker.finish(status)
        raise
    with cbs.control.finishing():  # a SIGTERM now waits until the tracker's status and the summary are written
        if tracker is not None:
            tracker.finish(status)
        summary = summarise(cbs, trainer.global_step, data)
        summary.update({"run_dir": str(run_dir), "adapter_dir": str(run_dir / "adapters" / "final"),
                        "mlflow_run_id": tracker.run_id if tracker else None,
                        "experiment_id": getattr(tracker, "experiment_id", None),  # its page in the UI
                        "tracking_uri": str(cfg.tracking.uri) if tracker else None,
                        "global_rank": job.rank, "trainable_params": model.trainable})
        if job.zero:
            rd.summary_file(run_dir, summary)
    return summary


def summarise(cbs: Callbacks, steps: int, data: Any) -> dict[str, Any]:
    """The numbers a run ends with: loss trends (per-step and fixed-noise), the last value of every metric,
    whether it completed."""
    losses = [h["train/loss"] for h in cbs.metrics.history if "train/loss" in h]
    series = {"train_fixed/loss": cbs.train_fixed.values,
              "eval/mel_distance": cbs.audio_eval.values if cbs.audio_eval else []}
    last = {}
    for row in cbs.metrics.history:
        last.update({k: v for k, v in row.items() if k != "step"})
    for fixed in (cbs.train_fixed, cbs.val):
        if fixed is not None and fixed.history:
            last.update(fixed.history[-1][1])
    last.update({k: v[-1][1] for k, v in series.items() if v})
    return {
        "steps": steps, "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
        "loss_start_mean": _window_mean(losses, first=True), "loss_end_mean": _window_mean(losses, first=False),
        "train_fixed_loss": cbs.train_fixed.values, "val_loss": cbs.val.values if cbs.val else [],
        "val_examples": len(data.val) if data.val is not None else 0,
        "eval_mel_distance": series["eval/mel_distance"],
        "final_metrics": cbs.metrics.history[-1] if cbs.metrics.history else {},
        "skipped": len(data.report), "usable": data.report.usable,
        "nonfinite_steps": cbs.nonfinite.total if cbs.nonfinite is not None else 0,  # NaN/Inf steps skipped
        # False when stopped early (quit, SIGTERM, Ctrl-C): a re-run of the same sweep resumes it
        "completed": cbs.control.stopped_at is None, "stopped_at": cbs.control.stopped_at,
        "last_metrics": last,
    }


def adjust_to_data(cfg: DictConfig, plugin: Any, data: Any) -> list[str]:
    """The plugin's adjustments to the data it got (``Plugin.fit_to_data``), each printed as a sentence."""
    from omegaconf import open_dict

    from audiotrain.train.console import console

    with open_dict(cfg):
        changes = plugin.fit_to_data(cfg, len(data.train), len(data.val) if data.val is not None else 0)
    for text in changes:
        console.print(f"[yellow]Adjusted:[/] {text}", highlight=False)
    return list(changes)


def build_loader(cfg: DictConfig, dataset: AudioDataset, acc: str):
    """The sampler and DataLoader: a shuffled example sampler, or — with ``dataset.order`` — the bucketed
    batch sampler (interleaved/duration/group/random orders, batches capped by total seconds)."""
    from audiotrain.data.batching import BucketBatchSampler
    from audiotrain.train.console import console
    from audiotrain.train.worker_signals import ShieldedLoader, quiet_worker_init
    from audiotrain.train.data_workers import data_workers, explain_once

    workers, note = data_workers(cfg.dataset.get("num_workers"), processes=int(cfg.trainer.devices))
    explain_once(workers, note, lambda text: console.print(f"[yellow]Note:[/] {text}"))
    common = dict(num_workers=workers, collate_fn=collate_passthrough,
                  persistent_workers=False, pin_memory=acc == "gpu", worker_init_fn=quiet_worker_init)
    d = cfg.dataset
    if d.get("order"):
        sampler = BucketBatchSampler(dataset.durations, dataset.groups, order=str(d.order),
                                     max_batch_seconds=d.get("max_batch_seconds"), batch_size=int(d.batch_size),
                                     seed=int(cfg.seed), shuffle_batches=bool(d.get("shuffle_batches", False)),
                                     drop_last=bool(d.get("drop_last", False)), shuffle=bool(d.shuffle))
        return sampler, ShieldedLoader(dataset, batch_sampler=sampler, **common)
    sampler = ResumableSampler(len(dataset), seed=int(cfg.seed), shuffle=bool(d.shuffle))
    drop_last = bool(d.get("drop_last", False)) and len(dataset) >= int(d.batch_size)  # never an empty epoch
    return sampler, ShieldedLoader(dataset, batch_size=int(d.batch_size), sampler=sampler, drop_last=drop_last,
                                   **common)


def _window_mean(values: list[float], first: bool) -> float | None:
    """Mean of the first/last 10% of the per-step losses (at least one): the trend, not one noisy step."""
    if not values:
        return None
    k = max(1, len(values) // 10)
    window = values[:k] if first else values[-k:]
    return sum(window) / len(window)
