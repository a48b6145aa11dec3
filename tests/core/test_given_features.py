"""Rows that already hold an encoder's outputs (``given``, ``audiotrain.data.given``): the encoder is not run on
them, the cache holds exactly the given tensors, cache on and off feed the same features, and a row without a
file for its primary stream needs a duration (else it is reported, never lost silently)."""
from __future__ import annotations

import torch

from audiotrain.data.cache import FeatureCache
from audiotrain.data.dataset import AudioDataset
from audiotrain.data.given import given_entry
from audiotrain.data.manifest import Manifest
from audiotrain.data.prepare import prepare_items
from audiotrain.data.report import BadInputReport
from tests.core.tiny_streams import STREAMS, CharCodes, FrameRMS, write_tone


def _encoders():
    return [FrameRMS("mix"), FrameRMS("vocal"), CharCodes()]


def _rows(tmp_path):
    vocal = write_tone(tmp_path / "a.vocal.wav", 8000, 0.5, [1.0])
    given_mix = {"mix_rms": torch.arange(26, dtype=torch.float32).reshape(13, 2)}
    return [
        # the mix is given as features, the vocal is a file: only the vocal and the text are encoded
        {"key": "a", "audio": {"vocal": str(vocal)}, "text": "hi", "duration": 0.5, "given": {"rms-mix": given_mix}},
        # everything given, no file at all
        {"key": "b", "audio": {}, "text": "yo", "duration": 1.25,
         "given": {"rms-mix": {"mix_rms": torch.ones(3, 2)}, "rms-vocal": {"vocal_rms": torch.zeros(2, 1)}}},
        # no file for the primary stream and no duration: reported
        {"key": "c", "audio": {}, "text": "no",
         "given": {"rms-mix": {"mix_rms": torch.ones(1, 2)}, "rms-vocal": {"vocal_rms": torch.ones(1, 1)}}},
    ]


def test_given_outputs_are_cached_as_they_are_and_the_encoder_is_not_run(tmp_path):
    encoders = _encoders()
    cache = FeatureCache(tmp_path / "cache", "tiny")
    report = BadInputReport()
    items = prepare_items(Manifest(_rows(tmp_path), str(tmp_path)), None, STREAMS, encoders, cache, report)
    assert [it.row["key"] for it in items] == ["a", "b"]
    (skip,) = report.skipped
    assert skip.path == "row c" and "no 'mix' audio file and no duration" in skip.reason
    mix, vocal, chars = encoders
    assert mix.calls == 0 and vocal.calls == 1 and chars.calls == 2  # only what was not given
    a, b = items
    assert a.duration == 0.5 and b.duration == 1.25 and a.audio_path is None and a.stream_path("vocal")
    assert a.entries["rms-mix"] == given_entry("rms-mix", _rows(tmp_path)[0]["given"]["rms-mix"])
    ds = AudioDataset(items, None, STREAMS, encoders, cache)
    feats = ds[0]["features"]
    assert torch.equal(feats["mix_rms"], torch.arange(26, dtype=torch.float32).reshape(13, 2))
    assert feats["vocal_rms"].shape == (10, 1) and feats["chars"].tolist() == [ord("h"), ord("i")]
    assert torch.equal(ds[1]["features"]["vocal_rms"], torch.zeros(2, 1))
    # a second preparation finds every entry: nothing is encoded again
    again = _encoders()
    prepare_items(Manifest(_rows(tmp_path), str(tmp_path)), None, STREAMS, again, cache, BadInputReport())
    assert [e.calls for e in again] == [0, 0, 0]


def test_without_the_cache_the_given_outputs_reach_the_model_unchanged(tmp_path):
    from audiotrain.train.module import TrainModule

    encoders = _encoders()
    items = prepare_items(Manifest(_rows(tmp_path)[:2], str(tmp_path)), None, STREAMS, encoders, None,
                          BadInputReport())
    ds = AudioDataset(items, _Plain(), STREAMS, encoders, None)
    raw = ds[0]["raw"]
    assert "given" in raw and raw["streams"]["mix"] is None
    module = TrainModule.__new__(TrainModule)  # only its encoder path is exercised
    torch.nn.Module.__init__(module)
    module._device = torch.device("cpu")  # LightningModule.device
    module._encoders, module._encoders_device = encoders, torch.device("cpu")
    feats = module._encode(raw)
    assert torch.equal(feats["mix_rms"], torch.arange(26, dtype=torch.float32).reshape(13, 2))
    assert feats["vocal_rms"].shape == (10, 1) and encoders[0].calls == 0


class _Plain:
    def prepare_example(self, row, rng):
        return {"key": row["key"], "text": row["text"]}


def test_the_in_memory_feature_cache_is_bounded_by_bytes(tmp_path):
    encoders = _encoders()
    cache = FeatureCache(tmp_path / "cache", "tiny")
    items = prepare_items(Manifest(_rows(tmp_path)[:2], str(tmp_path)), None, STREAMS, encoders, cache,
                          BadInputReport())
    ds = AudioDataset(items, None, STREAMS, encoders, cache)
    first = ds[0]["features"]
    size = sum(v.numel() * v.element_size() for v in first.values())
    ds.memory_bytes = size  # room for one example
    ds[1]
    assert list(ds._lru) == [items[1].fingerprint]  # the older example left memory
    kept = ds._lru[items[1].fingerprint]
    assert ds._lru_bytes == sum(v.numel() * v.element_size() for v in kept.values())
    assert torch.equal(ds[0]["features"]["mix_rms"], first["mix_rms"])  # read back from the disk cache
