"""Audio evaluation: generate speech/music for fixed validation prompts and score it against the reference.

``evaluate`` is the one place the metric is computed, for both ``mode=eval`` (``run_eval``: load the
model and its adapter from ``ckpt_path=`` / ``resume=auto``, evaluate once, exit) and the periodic eval
during training (``AudioEval``, every ``trainer.eval_every_n_steps`` when ``trainer.eval_audio`` is on).

The prompts are the first K usable examples of the held-out validation set (of the training data when the run
has none) (K = ``trainer.eval_prompts``, else ``trainer.sample_prompts``):
each example's own conditions (for VALL-E its text, plus a same-speaker acoustic prompt chosen as in
training, with a fixed seed), generated with the backbone's ``sample_audio`` (for VALL-E: AR level 0,
then the NAR levels), one example at a time so no padding enters the metric. The reference is the
example's own target decoded by the codec (``backbone.reference_audio``). The metric is
``audiotrain.tracking.mel_distance.mel_distance`` (multi-resolution log-mel L1, cut to the shorter length),
averaged over the prompts and logged as ``eval/mel_distance``; per prompt the wavs and spectrogram pngs
(``hyp_*``, ``ref_*``) go to ``<run_dir>/eval/step_<N>/`` and to MLflow under ``eval/step_<N>``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from audiotrain.atomic_write import atomic_write_text
from audiotrain.errors import UserError
from audiotrain.models.backbone import Backbone
from audiotrain.tracking.mel_distance import mel_distance, resample
from audiotrain.tracking.samples import tracks, write_sample
from audiotrain.train.callbacks import Periodic
from audiotrain.train.console import console
from audiotrain.train.data_setup import load_data
from audiotrain.train.fixed_noise_loss import fixed_noise_losses
from audiotrain.train.job_setup import start_job
from audiotrain.train.model_setup import build_model
from audiotrain.train.module import TrainModule
from audiotrain.train.tracking_setup import start_tracking, write_run_files

METRIC = "eval/mel_distance"


class EvalError(UserError):
    pass


def can_render(backbone: Backbone) -> bool:
    """True when the backbone generates audio and renders its targets (both are needed for the metric)."""
    cls = type(backbone)
    return cls.sample_audio is not Backbone.sample_audio and cls.reference_audio is not Backbone.reference_audio


def num_prompts(cfg: DictConfig) -> int:
    k = OmegaConf.select(cfg, "trainer.eval_prompts", default=None)
    return max(1, int(k if k is not None else cfg.trainer.sample_prompts))


def evaluate(cfg: DictConfig, module: Any, dataset: Any, tracker: Any, run_dir: str | Path, step: int) -> dict[str, Any]:
    """Generate for the first K examples, score against their references, write and log everything.

    Returns ``{"step", "mel_distance", "per_example": [{"key", "mel_distance", "seconds"}...], "dir", "files"}``.
    """
    backbone = module.backbone
    if not can_render(backbone):
        raise EvalError(f"{type(backbone).__name__} cannot render audio (no sample_audio/reference_audio): "
                        "audio evaluation needs both.")
    if len(dataset) == 0:
        raise EvalError("No examples to evaluate on.")
    out = Path(run_dir) / "eval" / f"step_{int(step)}"
    out.mkdir(parents=True, exist_ok=True)
    seed = int(cfg.seed)
    rows: list[dict[str, Any]] = []
    files: list[Path] = []
    plugin = getattr(module, "plugin", None)
    extra = list(plugin.audio_metrics(cfg)) if plugin is not None else []  # the system's own scores
    was_training = module.training
    module.eval()
    try:
        for i in range(min(num_prompts(cfg), len(dataset))):
            ex = dataset[i]
            with module.examples_from(dataset):
                conditions = module.features([ex], salt=i)
            with torch.no_grad():
                hyp, sr = backbone.sample_audio(conditions, seed=seed + i)
                hyp = tracks(hyp)[""]  # the main track is scored
                reference = backbone.reference_audio(conditions)
            if reference is None:
                raise EvalError(f"{type(backbone).__name__}.reference_audio returned nothing for example {ex['key']}.")
            ref, ref_sr = reference
            hyp, ref = hyp[0].float().cpu(), resample(ref[0].float().cpu(), int(ref_sr), int(sr))
            dist = mel_distance(hyp, ref, int(sr))
            key = str(ex["key"]).replace("/", "__")
            files += write_sample(hyp.numpy(), int(sr), out / f"hyp_{i}_{key}",
                                  title=f"step {step}: generated, {key} (mel distance {dist:.3f})")
            files += write_sample(ref.numpy(), int(sr), out / f"ref_{i}_{key}", title=f"reference (codec), {key}")
            rows.append({"key": str(ex["key"]), "mel_distance": dist, "seconds": hyp.shape[-1] / int(sr),
                         "reference_seconds": ref.shape[-1] / int(sr)})
            row = dataset.items[i].row if hasattr(dataset, "items") else {}
            for metric in extra:
                value = metric.score(hyp, int(sr), row)
                rows[-1][metric.name] = None if value is None else float(value)
    finally:
        module.train(was_training)
    mean = sum(r["mel_distance"] for r in rows) / len(rows)
    result = {"step": int(step), "mel_distance": mean, "per_example": rows, "dir": str(out)}
    logged = {METRIC: mean}
    for metric in extra:
        scored = [r[metric.name] for r in rows if r.get(metric.name) is not None]
        if scored:
            result[metric.name] = logged[f"eval/{metric.name}"] = sum(scored) / len(scored)
    metrics_file = out / "metrics.json"
    atomic_write_text(metrics_file, json.dumps(result, indent=2))
    files.append(metrics_file)
    if tracker is not None:
        tracker.log_metrics(logged, int(step))
        for f in files:
            tracker.log_artifact(f, f"eval/step_{int(step)}")
    result["files"] = [str(f) for f in files]
    return result


class AudioEval(Periodic):
    """``eval/mel_distance`` at the start, every ``every`` optimizer steps and at the end (global rank 0 only;
    the other ranks wait for it at their next collective)."""

    def __init__(self, every: int, cfg: DictConfig, dataset: Any, tracker: Any, run_dir: str | Path):
        self.every, self.cfg, self.dataset, self.tracker, self.run_dir = int(every), cfg, dataset, tracker, Path(run_dir)
        self.results: list[dict[str, Any]] = []

    @property
    def values(self) -> list[tuple[int, float]]:
        return [(r["step"], r["mel_distance"]) for r in self.results]

    def _run(self, trainer, pl_module) -> None:
        step = trainer.global_step
        if trainer.global_rank != 0 or (self.results and self.results[-1]["step"] == step):
            return
        self.results.append(evaluate(self.cfg, pl_module, self.dataset, self.tracker, self.run_dir, step))



# ---- mode=eval ---------------------------------------------------------------------------------
def load_checkpoint(module: Any, ckpt: Path) -> int:
    """Load a Lightning checkpoint's weights (adapter-only or full) into ``module``; returns its global step.

    Read as data (``audiotrain.safe_files``: ``weights_only=True`` unless ``trust_pickle=true``; the tensors
    memory-mapped, copied once into the model) and checked to be of this run's plugin, preset and adapter
    (``checkpoint_check``): a checkpoint that carries code is refused, never run."""
    from audiotrain.train.checkpoint_check import read_checkpoint
    from audiotrain.train.checkpoint_identity import source

    state = read_checkpoint(ckpt, module.cfg, module=module)
    where, _ = source(module.cfg, ckpt)
    result = module.load_state_dict(state["state_dict"], strict=False)
    if result.unexpected_keys:
        raise EvalError(f"{where} holds {len(result.unexpected_keys)} weights this model lacks (first: "
                        f"{result.unexpected_keys[0]}): evaluate with the model and lora settings it was trained with.")
    trained = {n for n, p in module.named_parameters() if p.requires_grad}
    missing = sorted(trained & set(result.missing_keys))
    if missing:
        raise EvalError(f"{where} lacks {len(missing)} trained weights (first: {missing[0]}): evaluate with the "
                        "lora settings it was trained with.")
    return int(state.get("global_step", 0))


def run_eval(cfg: DictConfig, overrides: list[str] | None = None) -> dict[str, Any]:
    """``mode=eval``: build the model, load ``ckpt_path=`` (or the newest checkpoint with ``resume=auto``),
    measure ``val/*`` on the held-out set (when the run has one) and the audio eval on the fixed prompts, log to
    a new MLflow run (a child of the training run when its id is known) and return the result with the run's
    paths."""

    overrides = list(overrides or [])
    job = start_job(cfg, "eval")
    run_dir, ckpt = job.run_dir, job.ckpt
    data = load_data(cfg, job.plugin, run_dir, job.accelerator)
    model = build_model(cfg, job.plugin, report=False)
    if not can_render(model.backbone):
        raise EvalError(f"mode=eval: the {job.plugin.name} backbone cannot render audio, so there is nothing to score.")
    module = TrainModule(model.backbone, job.plugin, cfg, data.encoders, None, adapter_only=model.adapter_only)
    module.dataset = data.train
    step = 0
    if ckpt is not None:
        step = load_checkpoint(module, ckpt)
        console.print(f"Evaluating {ckpt} (step {step}).")
    else:
        console.print("[yellow]mode=eval without ckpt_path= or resume=auto: evaluating the base model "
                      "(its adapter untrained).[/]")
    if job.accelerator == "gpu":
        module.to("cuda")
    write_run_files(cfg, run_dir, overrides)
    tracker = start_tracking(cfg, job.plugin, run_dir, overrides, data.report_text(), mode="eval", ckpt=ckpt)
    status = "FAILED"
    try:
        val: dict[str, float] = {}
        if data.val is not None:
            val = {f"val/{k}": v for k, v in fixed_noise_losses(module, data.val, int(cfg.trainer.val_noise_draws)).items()}
            if tracker is not None:
                tracker.log_metrics(val, step)
        result = evaluate(cfg, module, data.val or data.train, tracker, run_dir, step)
        status = "FINISHED"
    finally:
        if tracker is not None:
            tracker.finish(status)
    summary = {**result, "mode": "eval", "run_dir": str(run_dir), "checkpoint": str(ckpt) if ckpt else None,
               "val": val, "val_examples": len(data.val) if data.val is not None else 0,
               "mlflow_run_id": tracker.run_id if tracker else None,
               "tracking_uri": str(cfg.tracking.uri) if tracker else None}
    atomic_write_text(run_dir / "eval_summary.json", json.dumps(summary, indent=2, default=str))
    return summary


def eval_message(summary: dict[str, Any]) -> str:
    lines = [f"\n[bold green]Eval done.[/] step {summary['step']}: {METRIC} = {summary['mel_distance']:.4f} "
             f"(mean over {len(summary['per_example'])} prompt(s); lower is better)"]
    if summary.get("val"):
        lines.append(f"  val/loss = {summary['val']['val/loss']:.4f} on {summary['val_examples']} held-out examples "
                     "(fixed noise)")
    else:
        lines.append("  no validation data (val_data=PATH or dataset.val_fraction=): the prompts are training examples")
    for r in summary["per_example"]:
        lines.append(f"  {r['key']}: {r['mel_distance']:.4f} ({r['seconds']:.2f} s generated, "
                     f"{r['reference_seconds']:.2f} s reference)")
    lines.append(f"  wavs + spectrograms: {summary['dir']}")
    if summary.get("mlflow_run_id"):
        lines.append(f"  MLflow run:    {summary['mlflow_run_id']} in {summary['tracking_uri']}")
    return "\n".join(lines)
