"""ACE-Step v1's song folder and HF dataset read as ACE-Step 1.5 rows (through the core's readers only), and each
form recognised by the reader order."""
from __future__ import annotations

from pathlib import Path

from audiotrain.data.report import BadInputReport
from audiotrain_acestep15.readers import acestep15_readers
from audiotrain_acestep15.readers_folder import AceStep15Folder
from audiotrain_acestep15.readers_v1 import V1HFDataset, V1SongFolder
from tests.bad_corpus import tone


def _picked(path: Path):
    return next(r for r in acestep15_readers() if r.matches(path))


def test_v1_song_folder(tmp_path):
    root = tmp_path / "v1"
    tone(root / "one.mp3", seconds=1.0)
    (root / "one_prompt.txt").write_text("pop,  male vocal , 120 bpm,", encoding="utf-8")
    (root / "one_lyrics.txt").write_text("[verse]\nhello", encoding="utf-8")
    tone(root / "two.wav", seconds=1.0)
    (root / "two_prompt.txt").write_text("ambient", encoding="utf-8")
    tone(root / "three.wav", seconds=1.0)
    (root / "three_prompt.txt").write_text("  \n", encoding="utf-8")
    assert isinstance(_picked(root), V1SongFolder)
    report = BadInputReport()
    rows = {r["key"]: r for r in V1SongFolder().read(root, report).rows}
    assert sorted(rows) == ["one", "two"]
    assert (rows["one"]["caption"], rows["one"]["lyrics"], rows["one"]["is_instrumental"]) == (
        "pop, male vocal, 120 bpm", "[verse]\nhello", False)
    assert (rows["two"]["lyrics"], rows["two"]["is_instrumental"]) == ("[Instrumental]", True)
    assert [(Path(s.path).name, s.reason.split(":")[0]) for s in report.skipped] == [
        ("three_prompt.txt", "tags file is empty")]
    # a folder with ACE-Step 1.5's own caption files is read as ACE-Step 1.5's, whatever else it holds
    (root / "two.caption.txt").write_text("ambient drone", encoding="utf-8")
    assert isinstance(_picked(root), AceStep15Folder)


def test_v1_hf_dataset(tmp_path):
    from datasets import Dataset

    audio = tone(tmp_path / "audio" / "a.wav", seconds=1.0)
    ds = tmp_path / "ds"
    Dataset.from_list([
        {"keys": "a", "filename": str(audio), "tags": ["rock", "guitar"], "norm_lyrics": "la", "speaker_emb_path": "",
         "recaption": {"simplified": "rock"}},
        {"keys": "b", "filename": str(audio), "tags": [], "norm_lyrics": "", "speaker_emb_path": "", "recaption": {}},
    ]).save_to_disk(str(ds))
    assert isinstance(_picked(ds), V1HFDataset)
    report = BadInputReport()
    rows = V1HFDataset().read(ds, report).rows
    assert [(r["key"], r["caption"], r["lyrics"], r["audio_path"]) for r in rows] == [
        ("a", "rock, guitar", "la", str(audio.resolve()))]
    assert [s.reason for s in report.skipped] == [
        "row 1 (b): no tags (ACE-Step 1.5 trains on captioned songs only): give the row its tags"]
