"""The data path every job shares: manifest → prepared (cached) items → plugin filters → AudioDataset."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig


def load_dataset(cfg: DictConfig, plugin: Any, run_dir: Path, acc: str, save_report: bool = True,
                 brief: bool = False):
    """The training job's data path (manifest → prepared/cached items → plugin filters → dataset), with the
    bad-input report printed (``brief``: its first line only, e.g. in the later jobs of a sweep) and saved in
    ``run_dir``. Returns ``(dataset, tokenizers, report)``."""
    from audiotrain.data.cache import FeatureCache
    from audiotrain.data.dataset import AudioDataset
    from audiotrain.data.prepare import DataError, prepare_items, resolve_manifest
    from audiotrain.data.report import BadInputReport
    from audiotrain.train.run import _progress, console

    report = BadInputReport()
    spec = plugin.audio_streams(cfg)
    manifest = resolve_manifest(cfg.data, plugin, report).repeated(int(cfg.dataset.repeat_count))
    tokenizers = plugin.build_tokenizers(cfg)
    cache = FeatureCache(cfg.cache_dir, plugin.name) if cfg.cache else None
    try:
        items = prepare_items(manifest, plugin, spec, tokenizers, cache, report, progress=_progress,
                              device="cuda" if acc == "gpu" else "cpu")
        items = plugin.filter_items(items, cfg, report)
        report.usable = len(items)
        if not items:
            raise DataError(f"No usable examples in {report.source}: every input was skipped (see the report above).")
    finally:
        text = report.render()
        if brief and len(report):
            text = f"{text.splitlines()[0]} (the list: {run_dir / 'bad_inputs.txt'})"
        console.print(text)
        if save_report:
            report.save(run_dir)
    if cfg.dataset.get("limit"):
        items = items[: int(cfg.dataset.limit)]
    if cache is not None:
        for t in tokenizers:  # with the cache, frozen encoders are not kept during training
            if hasattr(t, "release"):
                t.release()
    return AudioDataset(items, plugin, spec, tokenizers, cache), tokenizers, report
