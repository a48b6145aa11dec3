"""The data path every job shares: manifest → prepared (cached) items → plugin filters → AudioDataset, for the
training data and the held-out validation data (``val_data=PATH`` or ``dataset.val_fraction``, see
``val_split``), each with its bad-input report."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from audiotrain.data.cache import FeatureCache
from audiotrain.data.dataset import AudioDataset
from audiotrain.data.manifest import Manifest
from audiotrain.data.prepare import DataError, prepare_items, resolve_manifest
from audiotrain.data.prepare_pool import resolve_workers
from audiotrain.data.report import BadInputReport
from audiotrain.train import val_split
from audiotrain.train.console import console, progress


@dataclass
class Data:
    train: AudioDataset
    encoders: list
    report: BadInputReport
    val: AudioDataset | None = None           # None: the run has no held-out data
    val_report: BadInputReport | None = None  # val_data=PATH's own report (a split shares ``report``)

    def report_text(self) -> str:
        """The reports for the MLflow run's description: a few per kind of reason, the full lists are artifacts."""
        text = self.report.summary(full_list="the run artifact data/bad_inputs.txt")
        return text if self.val_report is None else \
            f"{text}\nValidation {self.val_report.summary(full_list='the run artifact data/bad_inputs_val.txt')}"


def load_data(cfg: DictConfig, plugin: Any, run_dir: Path, acc: str, save_report: bool = True,
              brief: bool = False) -> Data:
    """The job's training and validation data, with the bad-input reports printed (``brief``: their first line
    only, e.g. in the later jobs of a sweep) and saved in ``run_dir`` (``bad_inputs.*``, ``bad_inputs_val.*``)."""
    report = BadInputReport()
    val_report = BadInputReport() if cfg.get("val_data") else None
    spec = plugin.audio_streams(cfg)
    encoders = plugin.build_encoders(cfg)
    cache = FeatureCache(cfg.cache_dir, plugin.name) if cfg.cache else None
    device = "cuda" if acc == "gpu" else "cpu"
    workers = resolve_workers(cfg.dataset.get("prepare_workers", "auto"))

    def usable(manifest: Manifest, rep: BadInputReport, what: str) -> list:
        items = prepare_items(manifest, plugin, spec, encoders, cache, rep, progress=progress, device=device,
                              workers=workers)
        items = plugin.filter_items(items, cfg, rep)
        rep.usable = len(items)
        if not items:
            raise DataError(f"No usable {what} in {rep.source}: every input was skipped (see the report above).")
        return items

    val_items = None
    try:
        manifest = resolve_manifest(cfg.data, plugin, report)
        val_manifest = None
        if val_report is not None:
            val_manifest = resolve_manifest(cfg.val_data, plugin, val_report)
        elif cfg.dataset.get("val_fraction"):
            train_rows, val_rows = val_split.split_rows(manifest.rows, float(cfg.dataset.val_fraction), report.source,
                                                         getattr(plugin, "group_field", None))
            manifest = Manifest(train_rows, manifest.source, manifest.format)
            val_manifest = Manifest(val_rows, manifest.source, manifest.format)
        items = usable(manifest.repeated(int(cfg.dataset.repeat_count)), report, "training examples")
        if val_manifest is not None:
            val_items = usable(val_manifest, val_report or report, "validation examples")
            if val_report is None:
                report.usable = len(items)  # the split's one report counts the training examples
    finally:
        _show(report, "bad_inputs", run_dir, save_report, brief)
        if val_report is not None:
            _show(val_report, "bad_inputs_val", run_dir, save_report, brief, prefix="Validation ")
    if cfg.dataset.get("limit"):
        items = items[: int(cfg.dataset.limit)]
    if val_items is not None:
        _check_disjoint(items, val_items, cfg)
    if cache is not None:
        for t in encoders:  # with the cache, frozen encoders are not kept during training
            if hasattr(t, "release"):
                t.release()
    train = AudioDataset(items, plugin, spec, encoders, cache)
    val = AudioDataset(val_items, plugin, spec, encoders, cache) if val_items is not None else None
    if val is None:
        console.print("No validation data (val_data=PATH or dataset.val_fraction=0.1): val/loss is not logged; "
                      "train_fixed/loss (fixed noise, training examples) shows fitting, not generalisation.")
    else:
        console.print(f"Validation: {len(val)} held-out examples "
                      + (f"from {cfg.val_data}" if cfg.get("val_data") else
                         f"(dataset.val_fraction={float(cfg.dataset.val_fraction):g}, by {_unit(val)})")
                      + f", val/loss every {val_every(cfg)} steps.")
    return Data(train, encoders, report, val, val_report)


def val_every(cfg: DictConfig) -> int:
    """Optimizer steps between two validations: ``trainer.val_check_interval``, else ``eval_every_n_steps``,
    else ``every_n_train_steps`` (0: only at the start and the end)."""
    for key in ("val_check_interval", "eval_every_n_steps"):
        v = cfg.trainer.get(key)
        if v is not None:
            return int(v)
    return int(cfg.trainer.every_n_train_steps)


def _unit(ds: AudioDataset) -> str:
    return str(ds.plugin.group_field) if any(ds.groups) else "example"


def _show(rep: BadInputReport, stem: str, run_dir: Path, save: bool, brief: bool, prefix: str = "") -> None:
    """The console's form of the report (a few per kind of reason when long; ``brief``: its first line), and the
    full list saved in the run directory."""
    full = run_dir / f"{stem}.txt"
    text = rep.summary(full_list=full)
    if brief and len(rep):
        text = f"{rep.render().splitlines()[0]} (the list: {full})"
    console.print(prefix + text)
    if save:
        rep.save(run_dir, stem)


def _check_disjoint(train: list, val: list, cfg: DictConfig) -> None:
    """Validation never leaks into training: no example (same audio and text) in both sets."""
    seen = {it.fingerprint: it for it in train}
    shared = [it for it in val if it.fingerprint in seen]
    if shared:
        if cfg.get("val_data"):
            where, fix = f"val_data={cfg.val_data}", "give held-out files that are not in the training data"
        else:  # the same audio and text under two names, one on each side of the split
            where, fix = "the validation split", "remove the duplicates from the data"
        raise DataError(f"{where} holds {len(shared)} example(s) that data={cfg.data} trains on (first: "
                        f"{shared[0].row['key']}): {fix}.")
