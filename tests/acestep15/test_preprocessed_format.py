"""The per-song ``<id>.pt`` files and ``manifest.json`` ACE-Step 1.5's trainer reads: written atomically with the
spec's keys, shapes and dtypes; read back as data only (plain ``torch.load(weights_only=True)`` reads them, as the
trainer does; a file carrying pickled code is refused); a folder without a manifest is read as the trainer reads it."""
from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

from audiotrain.data.report import BadInputReport
from audiotrain.safe_files import UnsafeFileError
from audiotrain_acestep15 import preprocessed_format as pf
from audiotrain_acestep15.song_row import song_row


def _tensors(T: int = 50, L: int = 769, dtype=torch.bfloat16, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"target_latents": torch.randn(T, 64, generator=g).to(dtype), "attention_mask": torch.ones(T, dtype=dtype),
            "encoder_hidden_states": torch.randn(L, 2048, generator=g).to(dtype),
            "encoder_attention_mask": (torch.arange(L) < 700).to(dtype),
            "context_latents": torch.cat([torch.randn(T, 64, generator=g), torch.ones(T, 64)], 1).to(dtype)}


def _metadata(tmp_path) -> dict:
    row = song_row("album/song", tmp_path / "album" / "song.wav", caption="synth pop", lyrics="[verse] la", bpm=120,
                   keyscale="C major", timesignature="4", language="en")
    return pf.song_metadata(row, duration=2)


def test_a_written_song_loads_with_plain_torch_load_bit_exact(tmp_path):
    tensors, meta = _tensors(), _metadata(tmp_path)
    big = torch.randn(500, 64).to(torch.bfloat16)
    tensors["target_latents"] = big[:50]             # a view: only its own 50 frames are saved
    path = pf.write_song(tmp_path / "out", "0a1b2c3d", **tensors, metadata=meta)
    assert path.name == "0a1b2c3d.pt" and [p.name for p in path.parent.iterdir()] == ["0a1b2c3d.pt"]
    data = torch.load(path, map_location="cpu", weights_only=True)   # as ACE-Step 1.5's trainer loads it
    assert sorted(data) == sorted(pf.KEYS)
    assert {k: (tuple(data[k].shape), data[k].dtype) for k in pf.TENSORS} == {
        "target_latents": ((50, 64), torch.bfloat16), "attention_mask": ((50,), torch.bfloat16),
        "encoder_hidden_states": ((769, 2048), torch.bfloat16), "encoder_attention_mask": ((769,), torch.bfloat16),
        "context_latents": ((50, 128), torch.bfloat16)}
    for k in pf.TENSORS:
        assert torch.equal(data[k], tensors[k])
    assert data["target_latents"].untyped_storage().nbytes() == 50 * 64 * 2
    assert data["metadata"] == {"audio_path": str((tmp_path / "album" / "song.wav").resolve()), "filename": "song.wav",
                                "caption": "synth pop", "lyrics": "[verse] la", "duration": 2, "bpm": 120,
                                "keyscale": "C major", "timesignature": "4", "language": "en",
                                "is_instrumental": False, "preprocess_mode": "lora"}
    again = pf.read_song(path, pf.Widths())
    assert all(torch.equal(again[k], data[k]) for k in pf.TENSORS) and again["metadata"] == data["metadata"]


def test_fp32_cast_and_tiny_widths(tmp_path):
    t = _tensors(T=8, L=5, dtype=torch.float32)
    t["encoder_hidden_states"] = torch.randn(5, 32)
    widths = pf.Widths(latent=64, context=128, encoder=32)
    path = pf.write_song(tmp_path, "tiny", **t, metadata=_metadata(tmp_path), dtype=torch.bfloat16, widths=widths)
    data = pf.read_song(path, widths)
    assert {data[k].dtype for k in pf.TENSORS} == {torch.bfloat16}
    with pytest.raises(Exception, match=r"encoder_hidden_states is \[5, 32\], not \[L, 2048\]"):
        pf.read_song(path, pf.Widths())


@pytest.mark.parametrize("change,match", [
    (lambda t: t.update(context_latents=torch.zeros(50, 65)), r"context_latents is \[50, 65\], not \[T, 128\]"),
    (lambda t: t.update(attention_mask=torch.ones(49)), r"attention_mask has 49 positions where the others have T = 50"),
    (lambda t: t.update(encoder_attention_mask=torch.ones(768)), r"encoder_attention_mask has 768 positions"),
    (lambda t: t.update(target_latents=torch.zeros(1, 50, 64)), r"target_latents is \[1, 50, 64\], not \[T, 64\]"),
])
def test_wrong_shapes_are_refused_before_writing(tmp_path, change, match):
    t = _tensors(dtype=torch.float32)
    change(t)
    with pytest.raises(pf.PreprocessedFormatError, match=match):
        pf.write_song(tmp_path, "x", **t, metadata=_metadata(tmp_path))
    assert not list(tmp_path.glob("*.pt"))


def test_metadata_keys_are_exact(tmp_path):
    meta = {**_metadata(tmp_path), "extra": 1}
    with pytest.raises(pf.PreprocessedFormatError, match=r"song metadata has the keys"):
        pf.write_song(tmp_path, "x", **_tensors(), metadata=meta)


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_file_with_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    data = {**_tensors(T=4, L=3), "metadata": Payload()}
    torch.save(data, path)
    with pytest.raises(UnsafeFileError, match=r"holds pickled Python code .*was not opened"):
        pf.read_song(path)
    with pytest.raises(pickle.UnpicklingError):          # the trainer's own load refuses it too
        torch.load(path, weights_only=True)


def test_an_interrupted_write_keeps_the_previous_file(tmp_path, monkeypatch):
    first = pf.write_song(tmp_path, "s", **_tensors(seed=1), metadata=_metadata(tmp_path))
    before = first.read_bytes()

    def broken(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 half")
        raise OSError("killed")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError, match="killed"):
        pf.write_song(tmp_path, "s", **_tensors(seed=2), metadata=_metadata(tmp_path))
    assert first.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["s.pt"]


def test_manifest_and_a_manifest_less_folder(tmp_path):
    out = tmp_path / "pre"
    paths = [pf.write_song(out, sid, **_tensors(T=4 + i, L=3), metadata=_metadata(tmp_path))
             for i, sid in enumerate(["cc", "aa", "bb"])]
    # no manifest: every *.pt in the folder, as the trainer's loader takes them (sorted here)
    assert [p.name for p in pf.song_files(out)] == ["aa.pt", "bb.pt", "cc.pt"]
    manifest = pf.write_manifest(out, paths[:2], pf.dataset_metadata(num_samples=2, custom_tag="t"))
    data = json.loads(manifest.read_text(encoding="utf-8"))
    assert data["samples"] == ["cc.pt", "aa.pt"] and data["num_samples"] == 2
    assert sorted(data["metadata"]) == ["all_instrumental", "created_at", "custom_tag", "genre_ratio", "name",
                                        "num_samples", "tag_position"]
    assert pf.song_files(out) == [out / "cc.pt", out / "aa.pt"]
    (out / "aa.pt").unlink()
    report = BadInputReport()
    assert pf.song_files(out, report) == [out / "cc.pt"]
    assert [s.reason.split(",")[0] for s in report.skipped] == ["lists aa.pt"]
    with pytest.raises(Exception, match=r"lists aa\.pt, which is not in"):
        pf.song_files(out)
