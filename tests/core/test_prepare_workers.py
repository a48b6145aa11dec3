"""The cache build over ``dataset.prepare_workers`` processes: the same items, report and cache bytes whatever the
number of workers; an encoder's failure on a file is that file's skip; a worker that dies is one sentence."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from audiotrain.data.cache import FeatureCache
from audiotrain.data.prepare import prepare_items, resolve_manifest
from audiotrain.data.prepare_pool import resolve_workers
from audiotrain.data.report import BadInputReport
from audiotrain.errors import UserError
from audiotrain.plugins import registry
from tests.conftest import compose


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> Path:
    """Five SongGen songs with stems (four encoders: codecs of the mix and of the vocal stem, MERT on the vocal
    stem, T5 and the lyrics tokenizer), one copied under another name, and a broken file."""
    d = registry.get("songgen").example_data(tmp_path_factory.mktemp("songs") / "songs", 5)
    (d / "song_99.wav").write_bytes(b"RIFF\x00\x00 not a wav")
    (d / "song_99_prompt.txt").write_text("a broken song", encoding="utf-8")
    (d / "song_99_lyrics.txt").write_text("[verse] la", encoding="utf-8")
    for suffix in (".wav", "_prompt.txt", "_lyrics.txt"):
        (d / f"copy_01{suffix}").write_bytes((d / f"song_01{suffix}").read_bytes())
    return d


def build(data: Path, cache_dir: Path | None, workers: int, encoders=None):
    cfg = compose(["model=songgen", f"data={data}"])
    plugin = registry.get("songgen")
    report = BadInputReport()
    manifest = resolve_manifest(str(data), plugin, report)
    cache = FeatureCache(cache_dir, plugin.name) if cache_dir else None
    items = prepare_items(manifest, plugin, plugin.audio_streams(cfg), encoders or plugin.build_encoders(cfg), cache,
                          report, workers=workers)
    return items, report


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and not p.name.endswith(".lock")}


def summary(items, report):
    return ([(Path(i.audio_path).name, i.fingerprint, i.duration, i.entries) for i in items],
            [(Path(s.path).name, s.reason) for s in report.skipped], [(Path(p).name, t) for p, t in report.notes])


def test_one_worker_and_two_give_the_same_items_report_and_cache_bytes(songs, tmp_path):
    one = build(songs, tmp_path / "one", 1)
    two = build(songs, tmp_path / "two", 2)
    assert summary(*one) == summary(*two)
    names = [Path(i.audio_path).name for i in one[0]]
    assert names == sorted(names) and "song_99.wav" not in names and "copy_01.wav" in names
    assert [Path(s.path).name for s in one[1].skipped] == ["song_99.wav"]
    a, b = files(tmp_path / "one"), files(tmp_path / "two")
    assert len([k for k in a if k.endswith(".safetensors")]) >= 5 * 4
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    # and in this process, at its own thread count: the same items and report (bytes may differ in the last bit)
    assert summary(*build(songs, tmp_path / "here", 0)) == summary(*one)


def test_without_a_cache_every_file_is_still_checked_in_the_workers(songs):
    items, report = build(songs, None, 2)
    assert len(items) == 6 and [Path(s.path).name for s in report.skipped] == ["song_99.wav"]


class Failing:
    """Wraps an encoder; fails (or kills its process) on one file."""

    def __init__(self, inner, bad: str, die: bool = False):
        self.inner, self.bad, self.die = inner, bad, die
        self.name, self.stream = inner.name, getattr(inner, "stream", None)

    def cache_key(self):
        return self.inner.cache_key()

    def encode(self, example):
        if self.bad in str(example.get("key", "")):
            if self.die:
                os._exit(9)
            raise RuntimeError("shapes do not match")
        return self.inner.encode(example)


def test_an_encoders_failure_on_one_file_is_that_files_skip(songs, tmp_path):
    cfg = compose(["model=songgen", f"data={songs}"])
    encoders = [Failing(e, "song_03") if e.name == "text" else e
                for e in registry.get("songgen").build_encoders(cfg)]
    items, report = build(songs, tmp_path / "c", 2, encoders)
    assert "song_03.wav" not in [Path(i.audio_path).name for i in items] and len(items) == 5
    (skip,) = [s for s in report.skipped if "song_03" in s.path]
    assert skip.reason == "the 'text' encoder failed on it (RuntimeError: shapes do not match)"


def test_a_worker_that_dies_is_one_sentence(songs, tmp_path):
    cfg = compose(["model=songgen", f"data={songs}"])
    encoders = [Failing(e, "song_02", die=True) if e.name == "text" else e
                for e in registry.get("songgen").build_encoders(cfg)]
    # the sentence names the earliest file still in progress: song_02 itself, or one before it that the other
    # worker had not finished when the pool broke (a loaded machine)
    with pytest.raises(UserError, match=r"A data-preparation worker died .*song_0[0-2].wav or a later file .*"
                                        r"\(dataset.prepare_workers=1\)"):
        build(songs, tmp_path / "c", 2, encoders)


def test_prepare_workers_values():
    assert resolve_workers("auto") >= 1 and resolve_workers(None) == resolve_workers("auto")
    assert resolve_workers(0) == 0 and resolve_workers(3) == 3
    for bad in ("many", -1, 1.5, True):
        with pytest.raises(UserError, match=r"dataset.prepare_workers=.* is not a number of processes"):
            resolve_workers(bad)


def test_a_bad_prepare_workers_value_is_refused_with_the_config():
    from audiotrain.config.validate import validate

    with pytest.raises(UserError, match=r"dataset.prepare_workers='lots' is not a number of processes"):
        validate(compose(["model=acestep", "model.preset=tiny", "dataset.prepare_workers=lots"]), None)

