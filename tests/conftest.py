"""Shared fixtures: synthetic song folders (the tests make their own audio) and composed configs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="session")
def song_dir(tmp_path_factory) -> Path:
    """Four 3-4 s songs in ACE-Step's raw format (one without lyrics, one in Chinese)."""
    from audiotrain_acestep.demo_songs import demo_specs, write_song_folder

    d = tmp_path_factory.mktemp("songs")
    specs = demo_specs(4, seconds=3.0)
    write_song_folder(d, specs)
    return d


@pytest.fixture(scope="session")
def broken_song_dir(tmp_path_factory) -> Path:
    """Two good songs plus every kind of bad input."""
    from audiotrain_acestep.demo_songs import add_broken_inputs, demo_specs, write_song_folder

    d = tmp_path_factory.mktemp("broken_songs")
    write_song_folder(d, demo_specs(2, seconds=3.0))
    add_broken_inputs(d)
    return d


def compose(overrides: list[str]):
    from audiotrain.config import resolvers
    from audiotrain.config.compose import _compose
    from audiotrain.plugins import registry

    resolvers.register()
    registry.register_configs()
    return _compose(overrides)


@pytest.fixture
def tiny_cfg(tmp_path, song_dir):
    """A factory: compose a tiny ACE-Step config writing everything under tmp_path."""

    def make(*extra: str, data: Path | None = None, run: str = "run"):
        return compose([
            "model=acestep", f"data={data or song_dir}", "model.preset=tiny", "tracking=none",
            "dataset.num_workers=0", "dataset.max_duration=4", "trainer.accelerator=cpu",
            "trainer.every_plot_step=0", "trainer.progress_bar=false", f"cache_dir={tmp_path / 'cache'}",
            f"paths.log_dir={tmp_path / 'logs'}", f"paths.run_dir={tmp_path / 'logs' / run}", *extra,
        ])

    return make
