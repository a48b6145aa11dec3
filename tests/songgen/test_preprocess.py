"""SongGen's preprocessed dataset both ways: ``audiotrain songgen-preprocess`` writes preprocess_data.py's columns
with their meanings (checked against the features audiotrain computes for the same songs), and ``data=`` that
dataset trains on exactly those features; bad rows are reported, bad calls are one sentence."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from audiotrain.data.report import BadInputReport
from audiotrain_songgen import patterns as P
from audiotrain_songgen.preprocess import preprocess
from audiotrain_songgen.preprocessed import SongGenDataset
from tests.conftest import compose


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """(songs folder, preprocessed folder, cache dir)."""
    from audiotrain.plugins import registry

    root = tmp_path_factory.mktemp("sg_pre")
    songs = registry.get("songgen").example_data(root / "songs", 3)
    (root / "songs" / "song_03_vocal.wav").unlink()  # one song without a vocal stem
    out = root / "pre"
    assert preprocess([str(songs), "--output", str(out), "--eval", "1", f"cache_dir={root / 'cache'}"]) == 0
    return songs, out, root / "cache"


def _features(data, cache, tmp_path, *extra):
    """{key: features} as a training run prepares them for ``data``."""
    from audiotrain.plugins import registry
    from audiotrain.train.data_setup import load_data

    cfg = compose(["model=songgen", f"data={data}", "tracking=none", f"cache_dir={cache}", *extra])
    ds = load_data(cfg, registry.get("songgen"), tmp_path, "cpu", save_report=False).train
    return {ds.items[i].row["key"]: dict(ds[i]["features"]) for i in range(len(ds))}, ds


def test_the_columns_hold_what_preprocess_data_writes(written, tmp_path):
    from datasets import load_from_disk

    songs, out, cache = written
    d = load_from_disk(str(out))
    assert set(d) == {"train", "eval"} and len(d["train"]) == 2 and len(d["eval"]) == 1
    assert {"id", "fname", "input_ids", "prompt_input_ids", "mert_input", "labels", "target_length",
            "ref_audio_ids_vocal", "ref_audio_ids_acc", "ref_audio_ids_drum", "refaudio_length_vocal",
            "refaudio_length_acc", "refaudio_length_drum"} <= set(d["train"].column_names)
    assert str(d["train"].features["labels"].feature.feature.dtype) == "int16"
    feats, _ = _features(songs, cache, tmp_path)
    from audiotrain_songgen.preprocess import caption_ids

    ids_of = caption_ids(compose(["model=songgen"]))
    rows = [*d["train"], *d["eval"]]
    for r in rows:
        f = feats[r["id"]]
        codes = f["codes_mix"]
        labels = torch.tensor(r["labels"])
        assert labels.shape == (8, codes.shape[-1] + 8)
        for k in range(8):  # BOS x k, the codes, EOS x (8 - k)
            assert (labels[k, :k] == P.BOS).all() and (labels[k, k + codes.shape[-1]:] == P.EOS).all()
            assert torch.equal(labels[k, k:k + codes.shape[-1]], codes[k])
        assert r["prompt_input_ids"] == f["lyrics_ids"].tolist() and r["prompt_input_ids"][:1] == [261]
        caption = (songs / f"{r['id']}_prompt.txt").read_text(encoding="utf-8")
        assert r["input_ids"] == ids_of(caption) and r["input_ids"][-1] == 1  # T5's </s>
        assert r["target_length"] == 4 * 16000
        vocal = torch.tensor(r["ref_audio_ids_vocal"])
        if r["id"] == "song_03":
            assert r["mert_input"] == "random" and not vocal.any() and r["refaudio_length_vocal"] == 0
        else:
            assert r["mert_input"].endswith(f"{r['id']}_vocal.wav")
            assert (vocal[:, 0] == P.TRACK_SPECIAL["vocal"][0]).all() and vocal.shape == (8, codes.shape[-1] + 9)
            assert torch.equal(P.undelay(P.remap_track(vocal, "vocal")), f["codes_vocal"])
        assert not torch.tensor(r["ref_audio_ids_drum"]).any()


def test_training_on_the_preprocessed_dataset_sees_the_same_features(written, tmp_path):
    songs, out, cache = written
    from_songs, _ = _features(songs, cache, tmp_path / "a")
    from_pre, ds = _features(out, tmp_path / "cache2", tmp_path / "b")  # a fresh cache: nothing shared
    assert set(from_pre) == {"song_01", "song_02"}  # the train split
    for key, f in from_pre.items():
        want = from_songs[key]
        assert set(f) == set(want) - ({"codes_vocal"} if key == "song_03" else set())
        for name in f:
            assert torch.equal(f[name], want[name]), (key, name)
    item = ds.items[0]
    assert item.audio_path is None and item.duration == 4.0  # no mix file: the codes are given


def test_bad_rows_of_a_preprocessed_dataset_are_reported(tmp_path):
    from datasets import Dataset

    good = {"id": "a", "labels": P.delay(torch.randint(0, 1024, (8, 10))).numpy().astype(np.int16),
            "input_ids": [5, 6, 1], "prompt_input_ids": [261, 7, 0], "target_length": 3200, "mert_input": "random"}
    rows = [good,
            {**good, "id": "a"},
            {**good, "id": "shape", "labels": np.zeros((4, 12), np.int16)},
            {**good, "id": "range", "labels": np.full((8, 18), 1025, np.int16)},
            {**good, "id": "lyrics", "prompt_input_ids": [7, 8]},
            {**good, "id": "t5", "input_ids": []}]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "d"))
    reader = SongGenDataset()
    assert reader.matches(tmp_path / "d")
    report = BadInputReport()
    manifest = reader.read(tmp_path / "d", report)
    assert [r["key"] for r in manifest.rows] == ["a"]
    reasons = [s.reason for s in report.skipped]
    assert reasons == [
        "row 1 (a): repeats the id of row 0; using that row",
        "row 2 (shape): labels has the shape (4, 12), not [8, frames + delay]: was the dataset written by SongGen's "
        "preprocess_data.py (8 codebooks)?",
        "row 3 (range): labels holds ids outside [0, 1024) where codes belong: the delay pattern does not match (was "
        "it stored for another pattern?)",
        "row 4 (lyrics): prompt_input_ids is not [261] + lyrics + [0] (VoiceBpe's [START] … [STOP])",
        "row 5 (t5): input_ids (the caption's T5 ids) is empty"]
    Dataset.from_list([{"id": "x", "labels": good["labels"], "prompt_input_ids": [261, 0]}]).save_to_disk(
        str(tmp_path / "nocaption"))
    from audiotrain.data.prepare import DataError

    with pytest.raises(DataError, match=r"lacks the columns input_ids of SongGen's preprocess_data\.py"):
        reader.read(tmp_path / "nocaption", BadInputReport())


def test_one_worker_and_two_write_the_same_dataset_bytes(written, tmp_path):
    """The songs are decoded and encoded over dataset.prepare_workers processes: the dataset is the same bytes."""
    songs = written[0]
    for n in (1, 2):
        assert preprocess([str(songs), "--output", str(tmp_path / f"out{n}"), "--eval", "1",
                           f"cache_dir={tmp_path / f'cache{n}'}", f"dataset.prepare_workers={n}"]) == 0
    a, b = ({str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
            for root in (tmp_path / "out1", tmp_path / "out2"))
    assert a.keys() == b.keys() and len([k for k in a if k.endswith(".arrow")]) == 2
    assert [k for k in a if a[k] != b[k]] == []
    caches = [{str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.safetensors"))}
              for root in (tmp_path / "cache1", tmp_path / "cache2")]
    assert len(caches[0]) >= 3 * 4 and caches[0] == caches[1]


def test_bad_calls_are_one_sentence(written, tmp_path, capsys):
    songs, out, _ = written
    assert preprocess([str(songs), "--output", str(out)]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert preprocess([str(songs), "--output", str(tmp_path / "x"), "--eval", "-1"]) == 2
    assert "--eval -1 is negative" in capsys.readouterr().err
    assert preprocess([str(tmp_path / "nothing"), "--output", str(tmp_path / "y")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_ids_the_text_encoder_does_not_have_are_one_error():
    from audiotrain.errors import UserError
    from audiotrain_songgen.text_encoder import DescriptionEncoder

    enc = DescriptionEncoder.tiny(0)
    hidden, mask = enc.encode_ids([5, 6, 1])
    assert hidden.shape == (3, enc.hidden_size) and mask.tolist() == [1.0, 1.0, 1.0]
    ids = enc.token_ids("hi")
    assert torch.equal(enc.encode_ids(ids)[0], enc.encode("hi")[0])
    with pytest.raises(UserError, match=r"run up to 32000, but this text encoder has 264 ids"):
        enc.encode_ids([5, 32000, 1])
