"""One training job, end to end: validate → data → cache → model → LoRA → Lightning → MLflow."""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from audiotrain.config.validate import lightning_precision, validate
from audiotrain.data.dataset import AudioDataset, collate_passthrough
from audiotrain.data.sampler import ResumableSampler
from audiotrain.lora import adapter as lora_adapter
from audiotrain.lora.from_config import settings_from_cfg
from audiotrain.models.backbone import Backbone
from audiotrain.plugins import registry
from audiotrain.tracking.mlflow_store import Tracker, flatten, override_params
from audiotrain.tracking.samples import write_sample
from audiotrain.train import run_dir as rd
from audiotrain.train import sweep_job

console = Console(stderr=True, soft_wrap=True)


def quiet_libraries() -> None:
    """Keep the terminal for what matters: our report, the progress bar, the result."""
    import logging

    for name in ("lightning.pytorch", "lightning.fabric", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # bitsandbytes says it lacks optional GPU-kernel packages on every import; nothing we use needs them
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*litlogger.*")


def _progress(rows, desc):
    from tqdm.auto import tqdm

    return tqdm(rows, desc=desc, unit="file", dynamic_ncols=True)


def resolve_resume(cfg: DictConfig, job: "sweep_job.SweepJob | None" = None) -> Path | None:
    if cfg.get("ckpt_path"):
        return Path(str(cfg.ckpt_path)).resolve()
    if job is not None:  # a sweep job continues only from its own directory (never another job's checkpoint)
        return sweep_job.own_checkpoint(Path(str(cfg.paths.run_dir)).resolve())
    if cfg.get("resume") == "auto":
        found = rd.find_latest_checkpoint(cfg.paths.log_dir, cfg.exp_name)
        if found is None:
            console.print(f"[yellow]resume=auto: no checkpoint yet for exp_name={cfg.exp_name}; starting fresh.[/]")
        return found.resolve() if found else None
    return None


def launch_rank(cfg: DictConfig) -> int:
    """This process's global rank, known before Lightning sets up the process group. With backend=ddp,
    Lightning re-runs the command for ranks 1..N-1 when ``fit`` starts (LOCAL_RANK/NODE_RANK set, the same
    Hydra run dir); torchrun and SLURM set RANK / SLURM_PROCID. Only rank 0 writes the run's files, owns the
    MLflow run, prints the report and the progress bar and saves adapters."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    if "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return int(os.environ["SLURM_PROCID"])
    return int(os.environ.get("NODE_RANK", 0)) * int(cfg.trainer.devices) + int(os.environ.get("LOCAL_RANK", 0))


def train(cfg: DictConfig, overrides: list[str] | None = None) -> dict[str, Any]:
    """Run one training job. Returns a summary (run dir, adapter dir, MLflow run id, losses)."""
    import lightning as L

    from audiotrain.train.backend import accelerator, checkpoint_plugins, profiler, strategy
    from audiotrain.train.callbacks import (AdapterSaver, FixedEvalLoss, MetricsToTracker, SampleRenderer,
                                            StepCheckpoint, StepProgress)
    from audiotrain.train.control import LiveControl, checkpoint_action
    from audiotrain.train.evaluate import AudioEval, can_render
    from audiotrain.train.gc_freeze import long_lived_objects_frozen
    from audiotrain.train.module import TrainModule
    from audiotrain.train.trainable import apply_training_plan

    overrides = list(overrides or [])
    quiet_libraries()
    plugin = registry.get(OmegaConf.select(cfg, "model.name"))
    validate(cfg, plugin, module_names=plugin.lora_module_names(cfg) if cfg.lora.get("target_modules") else None)
    job = sweep_job.current()
    if job is not None and job.n_parallel > 1:
        torch.set_num_threads(sweep_job.threads_per_job(job))
    ckpt = resolve_resume(cfg, job)
    rank = launch_rank(cfg)
    zero = rank == 0
    console.quiet = not zero  # the other DDP ranks run the same job silently (rank 0 reports)
    run_dir = rd.run_dir_of_checkpoint(ckpt) if ckpt else Path(str(cfg.paths.run_dir)).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    if job is not None:
        console.print(f"[bold]Sweep job {job.num}[/] ({job.label()}): run directory {run_dir}")
    if ckpt:
        console.print(f"Resuming from {ckpt} (run directory {run_dir}).")
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    acc = accelerator(cfg)
    prec = lightning_precision(cfg.precision.name)
    console.print(f"Device: {acc}, precision {prec}, backend {cfg.backend.name}")
    if prec == "16-mixed" and acc == "cpu":
        console.print("[yellow]precision=16-mixed on a CPU runs as bf16 (no fp16 loss scaling happens on a CPU).[/]")

    # ---- data ---------------------------------------------------------------------------
    from audiotrain.train.data_setup import load_dataset

    dataset, tokenizers, report = load_dataset(cfg, plugin, run_dir, acc, save_report=zero,
                                               brief=job is not None and job.num > 0)
    spec = dataset.spec
    sampler, loader = build_loader(cfg, dataset, acc)

    # ---- model + adapter -----------------------------------------------------------------
    backbone = plugin.build_backbone(cfg)
    root = backbone.adapter_root()
    settings = settings_from_cfg(cfg.lora, backbone.default_lora_targets)
    released = 0
    if settings is not None:
        released = backbone.release_unused_weights(settings.target_modules)
        lora_adapter.attach(root, settings)
    else:
        for p in root.parameters():
            p.requires_grad_(True)
    if cfg.trainer.get("gradient_checkpointing") and hasattr(backbone, "enable_gradient_checkpointing"):
        backbone.enable_gradient_checkpointing()
    plan = apply_training_plan(backbone, cfg, settings, console if zero else None)  # init_from, model.freeze, counts
    trainable = sum(p.numel() for p in backbone.parameters() if p.requires_grad)
    total = sum(p.numel() for p in backbone.parameters())
    console.print(f"Model {plugin.name} ({cfg.model.get('preset')}): {trainable:,} trainable of {total:,} parameters"
                  + (f"; LoRA r={settings.r} alpha={settings.alpha:g} on {', '.join(settings.target_modules)}" if settings else "; full fine-tune")
                  + (f" ({released:,} parameters the forward pass never reads are not kept in memory)" if released else ""))
    module = TrainModule(backbone, plugin, cfg, tokenizers, sampler, adapter_only=settings is not None)
    module.dataset = dataset
    module.steps_per_epoch = max(1, len(loader) // max(1, int(cfg.trainer.accumulate_grad_batches)))

    # ---- tracking ------------------------------------------------------------------------
    resolved = OmegaConf.to_container(cfg, resolve=True)
    cfg_file = run_dir / "config.yaml"
    tracker = None
    if zero:
        cfg_file.write_text(OmegaConf.to_yaml(resolved))
        command_file = rd.write_command(run_dir, overrides)
    if cfg.tracking.name == "mlflow" and zero:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        tracker = Tracker(str(cfg.tracking.uri), cfg.tracking.get("experiment") or f"audiotrain/{plugin.name}")
        tags = {"plugin": plugin.name, "git_sha": rd.git_sha(), "run_dir": str(run_dir),
                "mlflow.source.name": "audiotrain", "mlflow.source.type": "LOCAL",
                "mlflow.note.content": f"audiotrain {' '.join(overrides)}\n\n{report.render()}"[:5000]}
        run_name = cfg.tracking.get("run_name") or str(cfg.exp_name)
        if os.environ.get("AUDIOTRAIN_PARENT_RUN_ID"):  # a sweep job: child of the sweep's parent run
            tags["mlflow.parentRunId"] = os.environ["AUDIOTRAIN_PARENT_RUN_ID"]
            if job is not None:
                tags["audiotrain.job"] = str(job.num)
                run_name = cfg.tracking.get("run_name") or job.label() or run_name
        run_id = tracker.start(run_name, tags=tags,
                               run_id=rd.read_run_id(run_dir) if ckpt else None)
        rd.write_run_id(run_dir, run_id)
        params = flatten(resolved)
        params.update(override_params(overrides))
        params["lora.trainable_params"] = trainable
        params.update(plan.params)  # params.trainable.<group> / params.frozen.<group>
        tracker.log_params(params)
        tracker.log_artifact(cfg_file)
        tracker.log_artifact(command_file)
        for f in ("bad_inputs.txt", "bad_inputs.json"):
            tracker.log_artifact(run_dir / f, "data")

    # ---- callbacks -----------------------------------------------------------------------
    adapters_dir = run_dir / "adapters"

    def _save_adapter(out: Path) -> None:
        if settings is None:
            from safetensors.torch import save_file

            out.mkdir(parents=True, exist_ok=True)
            save_file({k: v.contiguous() for k, v in root.state_dict().items()}, str(out / "model.safetensors"))
            return
        lora_adapter.save_peft(root, settings, out / "peft", base_model=f"{plugin.name}:{cfg.model.get('preset')}")
        plugin.save_adapter_native(root, settings, out / plugin.name)

    def save_adapter(out: Path) -> None:
        from audiotrain.train.deepspeed_cpu import gathered

        with gathered(root):  # ZeRO-3 partitions weights: gather them to save full tensors
            _save_adapter(out)

    def render(step: int, out: Path) -> list[Path]:
        """Fixed prompts (the first examples) → pred (and target) wav + png, and the prompt as text."""
        k = max(1, int(cfg.trainer.sample_prompts))
        batch = [dataset[i] for i in range(min(k, len(dataset)))]
        conditions = module.features(batch)
        seed = int(cfg.seed)
        with torch.no_grad():
            wavs, sr = backbone.sample_audio(conditions, seed=seed, steps=int(cfg.trainer.sample_steps))
            reference = backbone.reference_audio(conditions) if step == 0 or not (out.parent / "targets").exists() else None
        files: list[Path] = []
        for i, ex in enumerate(batch):
            key = str(ex["key"]).replace("/", "__")  # keys of songs in sub-folders hold a slash
            files += write_sample(wavs[i].float().cpu().numpy(), sr, out / f"pred_{i}_{key}", title=f"step {step} — {key}")
            info = out / f"prompt_{i}_{key}.md"
            info.write_text(f"# {key}\n\nSEED: {seed}\n\n{plugin.describe_example(dataset.items[i].row)}\n",
                            encoding="utf-8")
            files.append(info)
            if reference is not None:
                from audiotrain.data.audio_io import load_audio

                src, _ = load_audio(dataset.items[i].audio_path, spec)
                files += write_sample(src, spec.sample_rate, out.parent / "targets" / f"input_{i}_{key}",
                                      title=f"input audio — {key}")
                ref_wavs, ref_sr = reference
                files += write_sample(ref_wavs[i].float().cpu().numpy(), ref_sr, out.parent / "targets" / f"target_{i}_{key}",
                                      title=f"target (codec reconstruction) — {key}")
        return files

    eval_batches: list = []

    def eval_loss() -> float:
        """Mean loss over up to 8 fixed examples × 4 fixed noise draws (no condition dropout)."""
        if not eval_batches:
            eval_batches.extend(module.features([dataset[i]]) for i in range(min(8, len(dataset))))
        total, n = 0.0, 0
        with torch.no_grad():
            for i, feats in enumerate(eval_batches):
                for r in range(4):
                    gen = torch.Generator(device=module.device).manual_seed(1_000_003 + 4 * i + r)
                    total += float(backbone.training_losses(feats, generator=gen)["loss"])
                    n += 1
        return total / n

    eval_every = int(cfg.trainer.get("eval_every_n_steps") or cfg.trainer.every_n_train_steps)
    eval_cb = FixedEvalLoss(eval_every, eval_loss, tracker)
    audio_eval_cb = AudioEval(eval_every, cfg, dataset, tracker, run_dir) \
        if cfg.trainer.get("eval_audio") and can_render(backbone) else None
    metrics_cb = MetricsToTracker(tracker)
    adapter_cb = AdapterSaver(int(cfg.trainer.every_n_train_steps), save_adapter, adapters_dir, tracker)

    def eval_action(trainer, _module) -> str:
        eval_cb._run(trainer, _module)
        return f"eval/loss {eval_cb.values[-1][1]:.4f}"

    def export_action(trainer, _module):
        return adapter_cb._save(f"manual_step_{trainer.global_step}") if trainer.is_global_zero else None

    control = LiveControl(stdin=_stdin_enabled(cfg), control_file=run_dir / "control", tracker=tracker,
                          run_dir=run_dir, actions={"save": checkpoint_action(run_dir / "checkpoints"),
                                                    "eval": eval_action, "export": export_action},
                          stop_file=sweep_job.stop_file(job) if job is not None else None,
                          handle_signals=cfg.trainer.signal_handlers)
    callbacks = [
        metrics_cb,  # first: it closes the step's metrics that the others read
        # parallel sweep jobs share one terminal: no interleaved bars, their start and end lines say enough
        StepProgress(int(cfg.trainer.max_steps)) if cfg.trainer.progress_bar and zero
        and (job is None or job.n_parallel == 1) else None,
        eval_cb,
        audio_eval_cb,
        adapter_cb if zero else None,
        StepCheckpoint(dirpath=str(run_dir / "checkpoints"), filename="step={step}", auto_insert_metric_name=False,
                       every_n_train_steps=int(cfg.trainer.every_n_train_steps) or None,
                       save_top_k=int(cfg.trainer.keep_last_n), monitor="step", mode="max", save_last=True),
    ]
    if int(cfg.trainer.every_plot_step) > 0 and type(backbone).sample_audio is not Backbone.sample_audio:
        callbacks.append(SampleRenderer(int(cfg.trainer.every_plot_step), render, run_dir / "samples", tracker))
    if prec == "16-mixed":  # fp16 loss-scale floor guard (every plugin): warn, then checkpoint and stop
        from audiotrain.train.loss_scale import LossScaleGuard

        callbacks.append(LossScaleGuard(float(cfg.precision.loss_scale_floor), int(cfg.precision.loss_scale_patience),
                                        run_dir / "checkpoints", tracker))
    callbacks.append(control)
    trainer = L.Trainer(
        accelerator=acc, devices=int(cfg.trainer.devices), num_nodes=int(cfg.trainer.num_nodes),
        strategy=strategy(cfg, acc), precision=prec,
        max_steps=int(cfg.trainer.max_steps), max_epochs=int(cfg.trainer.max_epochs),
        accumulate_grad_batches=int(cfg.trainer.accumulate_grad_batches),
        gradient_clip_val=cfg.trainer.gradient_clip_val, gradient_clip_algorithm=str(cfg.trainer.gradient_clip_algorithm),
        reload_dataloaders_every_n_epochs=max(1, int(cfg.trainer.reload_dataloaders_every_n_epochs))
        if cfg.dataset.get("order") else int(cfg.trainer.reload_dataloaders_every_n_epochs),
        val_check_interval=cfg.trainer.val_check_interval, log_every_n_steps=int(cfg.trainer.log_every_n_steps),
        callbacks=[c for c in callbacks if c is not None], logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=str(run_dir), num_sanity_val_steps=0,
        use_distributed_sampler=False, deterministic=False, profiler=profiler(cfg, run_dir),
        plugins=checkpoint_plugins(cfg),
    )
    status = "FAILED"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*too few batches.*|.*smaller than the logging interval.*")
            # our sampler state is in the checkpoint (ResumableSampler), so mid-epoch resume is exact
            warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch.*")
            warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
            # TrainModule.configure_gradient_clipping defers to Lightning's default under DeepSpeed (which clips itself)
            warnings.filterwarnings("ignore", message=".*configure_gradient_clipping.*")
            with long_lived_objects_frozen():  # no 0.3-0.5 s full-collection stalls inside the loop
                trainer.fit(module, train_dataloaders=loader, ckpt_path=str(ckpt) if ckpt else None)
        status = "KILLED" if control.stopped_at is not None else "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if tracker is not None:
            tracker.finish(status)
    losses = [h["train/loss"] for h in metrics_cb.history if "train/loss" in h]
    summary = {
        "run_dir": str(run_dir), "adapter_dir": str(adapters_dir / "final"),
        "mlflow_run_id": tracker.run_id if tracker else None, "tracking_uri": str(cfg.tracking.uri) if tracker else None,
        "steps": trainer.global_step, "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "loss_start_mean": _window_mean(losses, first=True), "loss_end_mean": _window_mean(losses, first=False),
        "eval_loss": eval_cb.values, "eval_mel_distance": audio_eval_cb.values if audio_eval_cb else [],
        "global_rank": rank, "final_metrics": metrics_cb.history[-1] if metrics_cb.history else {},
        "skipped": len(report), "usable": report.usable,
        "trainable_params": trainable,
        # False when stopped early (quit, SIGTERM, Ctrl-C): a re-run of the same sweep resumes it
        "completed": control.stopped_at is None,
        "stopped_at": control.stopped_at,
        "last_metrics": _last_metrics(metrics_cb.history, {"eval/loss": eval_cb.values,
                                                           "eval/mel_distance": audio_eval_cb.values if audio_eval_cb else []}),
    }
    if zero:
        rd.summary_file(run_dir, summary)
    return summary


def _last_metrics(history: list[dict[str, float]], series: dict[str, list[tuple[int, float]]]) -> dict[str, float]:
    last: dict[str, float] = {}
    for row in history:
        last.update({k: v for k, v in row.items() if k != "step"})
    last.update({k: v[-1][1] for k, v in series.items() if v})
    return last


def _stdin_enabled(cfg: DictConfig) -> bool:
    """Typed commands (save, quit, lr X, eval, export) are read from a terminal; ``trainer.stdin_control``
    forces it on (e.g. a pipe) or off. Jobs without a terminal use ``<run_dir>/control``."""
    import sys

    forced = cfg.trainer.get("stdin_control")
    if forced is not None:
        return bool(forced)
    return sys.stdin is not None and sys.stdin.isatty()


def build_loader(cfg: DictConfig, dataset: AudioDataset, acc: str):
    """The sampler and DataLoader: a shuffled example sampler, or — with ``dataset.order`` — the speech
    batch sampler (interleaved/duration/speaker/random orders, batches capped by total seconds)."""
    from audiotrain.data.batching import SpeechBatchSampler
    from audiotrain.train.control import quiet_worker_init

    common = dict(num_workers=int(cfg.dataset.num_workers), collate_fn=collate_passthrough,
                  persistent_workers=False, pin_memory=acc == "gpu", worker_init_fn=quiet_worker_init)
    d = cfg.dataset
    if d.get("order"):
        sampler = SpeechBatchSampler(dataset.durations, dataset.groups, order=str(d.order),
                                     max_batch_seconds=d.get("max_batch_seconds"), batch_size=int(d.batch_size),
                                     seed=int(cfg.seed), shuffle_batches=bool(d.get("shuffle_batches", False)),
                                     drop_last=bool(d.get("drop_last", False)), shuffle=bool(d.shuffle))
        return sampler, torch.utils.data.DataLoader(dataset, batch_sampler=sampler, **common)
    sampler = ResumableSampler(len(dataset), seed=int(cfg.seed), shuffle=bool(d.shuffle))
    return sampler, torch.utils.data.DataLoader(dataset, batch_size=int(d.batch_size), sampler=sampler, **common)


def _window_mean(values: list[float], first: bool) -> float | None:
    """Mean of the first/last 10% of the per-step losses (at least one): the trend, not one noisy step."""
    if not values:
        return None
    k = max(1, len(values) // 10)
    window = values[:k] if first else values[-k:]
    return sum(window) / len(window)
