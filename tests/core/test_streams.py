"""Rows with several audio streams: each decoded to its role's spec, read by its own encoder, cached per stream."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from audiotrain.data.audio_io import load_audio
from audiotrain.data.cache import FeatureCache
from audiotrain.data.dataset import AudioDataset
from audiotrain.data.manifest import Manifest
from audiotrain.data.prepare import prepare_items
from audiotrain.data.report import BadInputReport
from audiotrain.data.streams import MAIN, normalise_row
from audiotrain.train.module import TrainModule

from tests.core.tiny_streams import STREAMS, TinyStreams, module_cfg, write_tone


@pytest.fixture
def song(tmp_path) -> dict[str, Path]:
    """One row's three stems at rates and channel counts that all differ from their roles' specs."""
    return {
        "mix": write_tone(tmp_path / "mix.wav", 44100, 1.0, [1.0, 0.5]),           # stereo 44.1k → stereo 16k
        "vocal": write_tone(tmp_path / "vocal.flac", 22050, 0.8, [1.0, 0.5]),      # stereo 22.05k → mono 8k
        "accompaniment": write_tone(tmp_path / "acc.wav", 16000, 0.6, [0.8]),      # mono 16k → stereo 12k
    }


def row(key: str, files: dict[str, Path], text: str = "la la", **extra) -> dict:
    return {"key": key, "audio": {r: str(p) for r, p in files.items()}, "text": text, **extra}


def prepared(rows, plugin, cache=None, encoders=None):
    report = BadInputReport()
    toks = encoders if encoders is not None else plugin.build_encoders(None)
    items = prepare_items(Manifest(rows), plugin, plugin.audio_streams(None), toks, cache, report)
    return items, toks, report


def test_each_stream_is_decoded_to_its_roles_spec_and_read_by_its_own_encoder(song):
    plugin = TinyStreams()
    items, toks, report = prepared([row("s1", song)], plugin)
    assert len(report) == 0 and len(items) == 1
    assert items[0].durations == pytest.approx({"mix": 1.0, "vocal": 0.8, "accompaniment": 0.6})
    assert items[0].duration == pytest.approx(1.0) and items[0].audio_path == str(song["mix"])  # mix comes first
    raw = AudioDataset(items, plugin, plugin.audio_streams(None), toks, None)[0]["raw"]
    shapes = {r: tuple(s["audio"].shape) for r, s in raw["streams"].items()}
    assert shapes == {"mix": (2, 16000), "vocal": (1, 6400), "accompaniment": (2, 7200)}
    assert {r: s["audio_length"] for r, s in raw["streams"].items()} == {"mix": 16000, "vocal": 6400,
                                                                        "accompaniment": 7200}
    # the vocal's two channels (1.0, 0.5 × the tone) are mixed to their mean; the mono accompaniment duplicated
    vocal = raw["streams"]["vocal"]["audio"]
    assert float(vocal[0, 800:-800].abs().max()) == pytest.approx(0.375, abs=0.01)
    acc = raw["streams"]["accompaniment"]["audio"]
    assert torch.equal(acc[0], acc[1]) and float(acc[0, 600:-600].abs().max()) == pytest.approx(0.4, abs=0.01)
    module = TrainModule(plugin.build_backbone(None), plugin, module_cfg(), toks, None, adapter_only=False)
    feats = module._item_features({"raw": raw})
    assert tuple(feats["mix_rms"].shape) == (40, 2)             # 16000 / 400 frames, stereo
    assert tuple(feats["vocal_rms"].shape) == (16, 1)           # 6400 / 400, mono
    assert tuple(feats["accompaniment_rms"].shape) == (18, 2)   # 7200 / 400, stereo
    # each encoder read its own stream: the RMS of a 0.5-amplitude sine × gain is 0.5 · gain / √2
    assert float(feats["mix_rms"][5:-5, 1].mean()) == pytest.approx(0.25 / np.sqrt(2), rel=0.02)
    assert float(feats["vocal_rms"][2:-2, 0].mean()) == pytest.approx(0.375 / np.sqrt(2), rel=0.02)
    assert float(feats["accompaniment_rms"][2:-2, 0].mean()) == pytest.approx(0.4 / np.sqrt(2), rel=0.02)
    assert feats["chars"].tolist() == [ord(c) for c in "la la"]
    direct, _ = load_audio(song["vocal"], STREAMS["vocal"])
    assert torch.equal(raw["streams"]["vocal"]["audio"], torch.from_numpy(direct))


def test_missing_or_bad_required_streams_are_reported_and_an_absent_optional_one_is_fine(song, tmp_path):
    corrupt = tmp_path / "corrupt_vocal.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt not audio at all")
    silent = tmp_path / "silent_vocal.wav"
    import soundfile as sf

    sf.write(str(silent), np.zeros((8000, 1), np.float32), 8000)
    plugin = TinyStreams()
    rows = [
        row("good", song),
        row("no-acc", {"mix": song["mix"], "vocal": song["vocal"]}),
        row("no-vocal", {"mix": song["mix"], "accompaniment": song["accompaniment"]}),
        row("gone", {"mix": song["mix"], "vocal": tmp_path / "never_written.wav"}),
        row("corrupt", {"mix": song["mix"], "vocal": corrupt}),
        row("silent", {"mix": song["mix"], "vocal": silent}),
        row("extra", {**song, "drums": write_tone(tmp_path / "drums.wav", 16000, 0.5, [1.0])}, text="with drums"),
    ]
    for cache in (None, FeatureCache(tmp_path / "cache", "tiny")):
        items, toks, report = prepared(rows, plugin, cache)
        assert [it.row["key"] for it in items] == ["good", "no-acc", "extra"]
        got = [(Path(s.path).name, s.reason) for s in report.skipped]
        assert got == [
            ("mix.wav", "no 'vocal' audio file: this plugin needs one per example (name it in the row's audio.vocal)"),
            ("never_written.wav", "vocal stream: audio file never_written.wav not found"),
            ("corrupt_vocal.wav", "vocal stream: cannot decode audio: the .wav file is corrupt, truncated or not audio"),
            ("silent_vocal.wav", "vocal stream: silent (95%+ of the samples are exactly zero)"),
        ]
        assert report.live_notes() == ["drums.wav: not used: the plugin reads the audio roles mix, vocal, "
                                        "accompaniment, not 'drums'"]
        assert set(items[1].durations) == {"mix", "vocal"} and "rms-accompaniment" not in items[1].entries
        ds = AudioDataset(items, plugin, plugin.audio_streams(None), toks, cache)
        module = TrainModule(plugin.build_backbone(None), plugin, module_cfg(), toks, None, adapter_only=False)
        batch = module.features([ds[0], ds[1]])
        assert batch["has_accompaniment"].tolist() == [True, False]  # collate can tell
        assert "accompaniment_rms" not in module._item_features(ds[1])


def test_cache_entries_are_keyed_per_stream_and_text(song, tmp_path):
    plugin = TinyStreams()
    cache = FeatureCache(tmp_path / "cache", "tiny")
    other = write_tone(tmp_path / "vocal2.wav", 8000, 0.5, [1.0], freq=330.0)
    rows = [row("s1", song), row("s2", {"mix": song["mix"], "vocal": other})]
    first, toks, _ = prepared(rows, plugin, cache)
    assert {t.name: t.calls for t in toks} == {"rms-mix": 1, "rms-vocal": 2, "rms-accompaniment": 1, "chars": 2}
    # s2 shares s1's mix file: one entry; its vocal and its text fields (its key) are its own entries
    assert first[0].entries["rms-mix"] == first[1].entries["rms-mix"]
    assert first[0].entries["rms-vocal"] != first[1].entries["rms-vocal"]
    assert first[0].entries["chars"] != first[1].entries["chars"] and "rms-accompaniment" not in first[1].entries

    # a new vocal for s1: only the vocal encoder runs again, for s1 only
    write_tone(song["vocal"], 22050, 0.8, [1.0, 0.5], freq=440.0)
    second, toks, _ = prepared(rows, plugin, cache)
    assert {t.name: t.calls for t in toks} == {"rms-mix": 0, "rms-vocal": 1, "rms-accompaniment": 0, "chars": 0}
    assert second[0].entries["rms-mix"] == first[0].entries["rms-mix"]
    assert second[0].entries["rms-vocal"] != first[0].entries["rms-vocal"]

    # an edited text: only the text encoder runs, and no audio is decoded — the files can be garbage of the same
    # size and time stamp (the digest memo stands for their bytes) and nothing notices
    for p in (song["mix"], song["vocal"], song["accompaniment"], other):
        st = os.stat(p)
        p.write_bytes(b"\x00" * st.st_size)
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    edited = [row("s1", song, text="la la la"), rows[1]]
    third, toks, report = prepared(edited, plugin, cache)
    assert len(report) == 0 and len(third) == 2
    assert {t.name: t.calls for t in toks} == {"rms-mix": 0, "rms-vocal": 0, "rms-accompaniment": 0, "chars": 1}
    assert [it.durations for it in third] == [it.durations for it in second]
    feats = AudioDataset(third, plugin, plugin.audio_streams(None), toks, cache)[0]["features"]
    assert feats["chars"].tolist() == [ord(c) for c in "la la la"]


def test_cache_on_and_off_give_identical_features(song, tmp_path):
    plugin = TinyStreams()
    rows = [row("s1", song), row("s2", {"mix": song["accompaniment"], "vocal": song["vocal"]}, text="oh")]
    results = []
    for cache in (FeatureCache(tmp_path / "cache", "tiny"), None):
        items, toks, _ = prepared(rows, plugin, cache)
        ds = AudioDataset(items, plugin, plugin.audio_streams(None), toks, cache)
        module = TrainModule(plugin.build_backbone(None), plugin, module_cfg(), toks, None, adapter_only=False)
        results.append([module._item_features(ds[i]) for i in range(len(ds))])
    for cached, fresh in zip(*results):
        assert cached.keys() == fresh.keys()
        assert all(torch.equal(cached[k], fresh[k]) for k in cached)
    assert "accompaniment_rms" in results[0][0] and "accompaniment_rms" not in results[0][1]


def test_a_readers_single_audio_path_is_the_main_role(tmp_path):
    wav = write_tone(tmp_path / "one.wav", 16000, 0.5, [1.0])
    assert normalise_row({"key": "k", "audio_path": str(wav), "text": "t"}) == {"key": "k", "audio": {MAIN: str(wav)},
                                                                                "text": "t"}
    plugin = TinyStreams({MAIN: STREAMS["vocal"]})
    items, toks, report = prepared([{"key": "k", "audio_path": str(wav), "text": "t"}], plugin)
    assert len(report) == 0 and items[0].audio_path == str(wav) and "audio_path" not in items[0].row
    assert items[0].durations == pytest.approx({MAIN: 0.5})


def test_the_tiny_plugins_example_data_reads_back_with_every_stream(tmp_path):
    from audiotrain.data.prepare import resolve_manifest

    plugin = TinyStreams()
    data = plugin.example_data(tmp_path / "stems", count=3)
    report = BadInputReport()
    manifest = resolve_manifest(str(data), plugin, report)
    assert [sorted(r["audio"]) for r in manifest.rows] == [["accompaniment", "mix", "vocal"], ["mix", "vocal"],
                                                           ["accompaniment", "mix", "vocal"]]
    items, _, report = prepared(manifest.rows, plugin)
    assert len(items) == 3 and len(report) == 0
    assert [it.duration for it in items] == pytest.approx([0.5, 0.6, 0.7])
