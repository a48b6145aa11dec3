"""The tiny ACE-Step 1.5 plugin's parts for the tests: a composed config, its backbone and the cached features of a
few synthetic songs of different lengths (2.0 s = 50 latent frames, 2.4 s = 60)."""
from __future__ import annotations

from pathlib import Path

from audiotrain.plugins import registry
from tests.conftest import NO_SIGNAL_HANDLERS, compose

from audiotrain_acestep15.example_data import write_song_folder


def overrides(data: Path, root: Path, *extra: str, variant: str = "tiny") -> list[str]:
    return ["model=acestep15", f"data={data}", f"model.variant={variant}", "tracking=none", "dataset.num_workers=0",
            "trainer.accelerator=cpu", "trainer.progress_bar=false", "trainer.every_plot_step=0", NO_SIGNAL_HANDLERS,
            f"cache_dir={root / 'cache'}", f"paths.log_dir={root / 'logs'}", f"paths.run_dir={root / 'logs' / 'run'}",
            *extra]


def tiny(root: Path, *extra: str, count: int = 3, variant: str = "tiny"):
    """``(plugin, cfg, features per song in dataset order)`` from a fresh synthetic folder under ``root``."""
    from audiotrain.train.data_setup import load_data

    data = root / "songs"
    if not data.exists():
        write_song_folder(data, count=count)
    plugin = registry.get("acestep15")
    cfg = compose(overrides(data, root, *extra, variant=variant))
    loaded = load_data(cfg, plugin, root / "run", "cpu", save_report=False)
    feats = [dict(loaded.train[i]["features"]) for i in range(len(loaded.train))]
    return plugin, cfg, feats
