"""Data formats: the raw song folder and the converter's HF dataset, with every bad input reported."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from audiotrain.data.audio_io import AudioSpec
from audiotrain.data.prepare import DataError, prepare_items, resolve_manifest
from audiotrain.data.report import BadInputReport
from audiotrain_acestep.convert import convert
from audiotrain_acestep.plugin import PLUGIN


def test_raw_folder_report_names_every_bad_file(broken_song_dir, tmp_path):
    report = BadInputReport()
    manifest = resolve_manifest(str(broken_song_dir), PLUGIN, report)
    items = prepare_items(manifest, PLUGIN, AudioSpec(), [], None, report)
    assert sorted(it.row["key"] for it in items) == ["demo_song_01", "demo_song_02"]
    reasons = {Path(s.path).name: s.reason for s in report.skipped}
    assert set(reasons) == {"broken_track.mp3", "silent_track.wav", "orphan_prompt.txt", "latin1_song_prompt.txt"}
    assert "corrupt" in reasons["broken_track.mp3"]
    assert "silent" in reasons["silent_track.wav"]
    assert "no audio file" in reasons["orphan_prompt.txt"]
    assert "UTF-8" in reasons["latin1_song_prompt.txt"]
    text = report.render()
    for name in reasons:
        assert name in text
    saved = report.save(tmp_path)
    data = json.loads(saved[1].read_text())
    assert data["usable"] == 2 and len(data["skipped"]) == 4


def test_song_without_lyrics_is_kept_as_instrumental(song_dir):
    report = BadInputReport()
    manifest = resolve_manifest(str(song_dir), PLUGIN, report)
    rows = {r["key"]: r for r in manifest.rows}
    assert rows["demo_song_04"]["lyrics"] == ""   # demo song 4 has no lyrics file
    assert any("demo_song_04" in n for n in report.live_notes())
    assert rows["demo_song_01"]["tags"][0] == "electronic"
    assert rows["demo_song_03"]["lyrics"].startswith("[verse]\n你好世界")


def test_nothing_usable_is_one_clear_error(tmp_path):
    from audiotrain_acestep.demo_songs import add_broken_inputs

    add_broken_inputs(tmp_path)
    report = BadInputReport()
    manifest = resolve_manifest(str(tmp_path), PLUGIN, report)
    with pytest.raises(DataError, match="No usable examples"):
        prepare_items(manifest, PLUGIN, AudioSpec(), [], None, report)


def test_missing_and_unknown_data_paths(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        resolve_manifest(str(tmp_path / "nope"), PLUGIN, BadInputReport())
    (tmp_path / "notes.md").write_text("hello")
    with pytest.raises(DataError, match="in no format"):
        resolve_manifest(str(tmp_path), PLUGIN, BadInputReport())


def test_converter_writes_the_seed_features(song_dir, tmp_path, monkeypatch):
    from datasets import load_from_disk

    monkeypatch.chdir(tmp_path)
    assert convert(["--data_dir", str(song_dir), "--repeat_count", "3", "--output_name", "ds"]) == 0
    ds = load_from_disk(str(tmp_path / "ds"))
    assert ds.column_names == ["keys", "filename", "tags", "speaker_emb_path", "norm_lyrics", "recaption"]
    assert len(ds) == 4 * 3
    row = ds[0]
    assert row["keys"] == "demo_song_01"
    assert Path(row["filename"]).is_file() and row["filename"].endswith("demo_song_01.mp3")
    assert row["tags"] == (song_dir / "demo_song_01_prompt.txt").read_text().strip().split(", ")
    assert row["speaker_emb_path"] == "" and row["recaption"] == {}
    assert row["norm_lyrics"] == (song_dir / "demo_song_01_lyrics.txt").read_text().strip()
    # the HF dataset is itself a valid data= input, with the same songs
    report = BadInputReport()
    manifest = resolve_manifest(str(tmp_path / "ds"), PLUGIN, report)
    assert manifest.format.startswith("HF dataset") and len(manifest) == 12 and not report.skipped


def test_hf_dataset_relative_filenames_resolve_against_the_dataset(tmp_path, song_dir):
    import shutil

    from datasets import Dataset

    root = tmp_path / "my_hf_dataset"
    (root / "audio").mkdir(parents=True)
    shutil.copy(song_dir / "demo_song_01.mp3", root / "audio" / "a.mp3")
    rows = [{"keys": "a", "filename": "audio/a.mp3", "tags": ["pop"], "norm_lyrics": "", "speaker_emb_path": "",
             "recaption": {"simplified": "a pop song"}},
            {"keys": "gone", "filename": "audio/gone.mp3", "tags": ["pop"], "norm_lyrics": "", "speaker_emb_path": "",
             "recaption": {"simplified": ""}}]
    Dataset.from_list(rows).save_to_disk(str(root))
    report = BadInputReport()
    manifest = resolve_manifest(str(root), PLUGIN, report)
    assert [r["key"] for r in manifest.rows] == ["a"]
    assert manifest.rows[0]["recaption"] == {"simplified": "a pop song"}
    assert len(report.skipped) == 1 and "gone" in report.skipped[0].reason


def test_songs_in_sub_folders_are_found(tmp_path):
    from audiotrain_acestep.demo_songs import demo_specs, write_song_folder

    write_song_folder(tmp_path / "album_a", demo_specs(1, seconds=3.0))
    write_song_folder(tmp_path / "album_b", demo_specs(1, seconds=3.0))
    (tmp_path / "album_b" / "stray_lyrics.txt").write_text("la la")
    report = BadInputReport()
    manifest = resolve_manifest(str(tmp_path), PLUGIN, report)
    assert sorted(r["key"] for r in manifest.rows) == ["album_a/demo_song_01", "album_b/demo_song_01"]
    assert [Path(s.path).name for s in report.skipped] == ["stray_lyrics.txt"]


def test_describe_example_shows_the_prompt_and_lyrics(song_dir):
    report = BadInputReport()
    rows = {r["key"]: r for r in resolve_manifest(str(song_dir), PLUGIN, report).rows}
    row = rows["demo_song_01"]
    prompt = PLUGIN.prepare_example(row, None)["prompt"]
    assert PLUGIN.describe_example(row) == f"PROMPT: {prompt}\n\nLYRICS:\n\n{row['lyrics']}"
    assert prompt and set(prompt.split(", ")) <= set(row["tags"])  # the prompt is made of the song's own tags
    assert PLUGIN.describe_example(rows["demo_song_04"]).endswith("LYRICS:\n\n")  # instrumental
