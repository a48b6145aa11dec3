"""Shared fixtures: synthetic song folders (the tests make their own audio) and composed configs; and what
holds for every test: it starts in an empty working directory, leaves the process's SIGTERM/SIGINT handlers as
it found them, and - under ``AUDIOTRAIN_TESTS_NO_SKIP=1`` (``.ci/run`` sets it) - may not skip."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# pytest-xdist's ``-n N`` runs N workers side by side: each (and every subprocess a test starts, which inherits the
# environment) gets its share of the cores. Left at torch's default every process spins one thread per core, and
# two workers on 2 cores ran the slow SongGen/TorToiSe tests 1.6x slower (234 s vs 151 s side by side).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _THREADS = str(max(1, (os.cpu_count() or 1) // _WORKERS))
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, _THREADS)
    if "torch" in sys.modules:  # imported before this file (by a plugin of pytest's): tell it too
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
NO_SKIP = "AUDIOTRAIN_TESTS_NO_SKIP"
# in-process training leaves SIGTERM/Ctrl-C to pytest: a stop signal must never turn into a clean early stop
NO_SIGNAL_HANDLERS = "trainer.signal_handlers=false"


def _signal_handlers() -> dict:
    return {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    """No test reads what a user's run (or another test) left in the working directory - ``mlflow.db``,
    ``.audiotrain_cache``, ``exps/`` - nor the shell's ``AUDIOTRAIN_CACHE``; none leaves a signal handler behind."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    monkeypatch.delenv("AUDIOTRAIN_CACHE", raising=False)
    before = _signal_handlers()
    yield
    assert _signal_handlers() == before, "the test left SIGTERM/SIGINT handlers changed"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """With ``AUDIOTRAIN_TESTS_NO_SKIP=1`` a skip is a failure naming its reason: CI provides what every test needs
    (a test that cannot run there is marked, e.g. ``gpu``, and deselected instead)."""
    report = yield
    if report.skipped and os.environ.get(NO_SKIP) == "1" and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = f"skipped ({reason}), but {NO_SKIP}=1: install what the test needs (see .ci/run)"
    return report


SLOW_SECONDS = 20.0  # `make test-fast` leaves out what takes longer (pyproject.toml's `slow` marker)
REPORT = "audiotrain_report"  # record_property(REPORT, text): printed at the end of the session
_UNMARKED_SLOW: list[tuple[float, str]] = []
_REPORTS: list[str] = []


def pytest_runtest_logreport(report):
    """Runs where the results are gathered (the main process, also under pytest-xdist's ``-n``): the lines a test
    reports and the tests over SLOW_SECONDS without the ``slow`` mark."""
    _REPORTS.extend(str(v) for k, v in report.user_properties if k == REPORT and report.when == "call")
    if report.duration > SLOW_SECONDS and "slow" not in report.keywords:
        _UNMARKED_SLOW.append((report.duration, f"{report.nodeid} ({report.when})"))


def pytest_collection_modifyitems(items):
    """The longest tests first, so that with ``-n`` workers they overlap the many short ones instead of ending
    the run alone (a stable sort: the rest keep their order)."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("first") else 1)


def pytest_terminal_summary(terminalreporter):
    """What tests reported (e.g. the kill points survived), then every test that took over SLOW_SECONDS without the
    ``slow`` mark, so the edit loop stays fast. Only a note (timings never decide a test's result: this machine's
    speed varies); mark it or make it faster."""
    if _REPORTS:
        terminalreporter.section("reported by the tests")
        for line in _REPORTS:
            terminalreporter.write_line(line)
    if _UNMARKED_SLOW:
        terminalreporter.section("tests over 20 s without @pytest.mark.slow")
        for seconds, name in sorted(_UNMARKED_SLOW, reverse=True):
            terminalreporter.write_line(f"{seconds:6.1f} s  {name}")


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
            "trainer.every_plot_step=0", "trainer.progress_bar=false", NO_SIGNAL_HANDLERS,
            f"cache_dir={tmp_path / 'cache'}", f"paths.log_dir={tmp_path / 'logs'}",
            f"paths.run_dir={tmp_path / 'logs' / run}", *extra,
        ])

    return make
