"""ACE-Step 1.5's song folder on a synthetic folder the test writes (one corrupt file among them): captions, the
lyrics fallback, X.json, a CSV, .opus, and every skip reported so that the counts add up."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from audiotrain.data.audio_io import AudioSpec
from audiotrain.data.prepare import prepare_items
from audiotrain.data.report import BadInputReport
from audiotrain_acestep15.readers import CHANNELS, MAX_SECONDS, SAMPLE_RATE, acestep15_readers
from audiotrain_acestep15.readers_folder import AceStep15Folder
from audiotrain_acestep15.song_row import stable_id
from tests.bad_corpus import tone

SPEC = AudioSpec(sample_rate=SAMPLE_RATE, channels=CHANNELS, min_duration=0.0, max_duration=MAX_SECONDS)


def _write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "songs"
    tone(root / "a.wav", seconds=2.0)
    _write(root / "a.caption.txt", "dreamy synth pop\n")
    _write(root / "a.lyrics.txt", "[verse]\nla la la\n")
    tone(root / "b.mp3", seconds=2.0)
    _write(root / "b.caption.txt", "lofi beat")
    _write(root / "b.lyrics.txt", "")            # empty: the X.txt fallback is read
    _write(root / "b.txt", "[chorus]\nfrom the fallback")
    tone(root / "album" / "c.flac", seconds=2.0)
    _write(root / "album" / "c.json", json.dumps({"caption": "jazz trio", "bpm": "96.5", "keyscale": "F major",
                                                  "timesignature": 3, "language": "ja", "genre": ["jazz", "swing"]}))
    tone(root / "d.ogg", seconds=2.0, fmt="OGG", subtype="VORBIS")
    tone(root / "e.opus", seconds=2.0, sr=48000, channels=2, fmt="OGG", subtype="OPUS")
    _write(root / "e.caption.txt", "opus caption")
    _write(root / "meta.csv", "File;BPM;Key;Caption\nd.ogg;90;A minor;from the csv\ne.opus;fast;;\n"
                              "gone.wav;100;C major;x\n")
    tone(root / "f.wav", seconds=2.0)             # no caption anywhere: not labeled
    _write(root / "g.wav", b"RIFF\x00\x00\x00\x00WAVEthis is not audio" * 8)   # the corrupt file
    _write(root / "g.caption.txt", "corrupt song")
    tone(root / "h.wav", seconds=2.0)
    _write(root / "h.caption.txt", "bad json beside")
    _write(root / "h.json", '{"bpm": 120,')
    tone(root / "i.wav", seconds=2.0)
    _write(root / "i.caption.txt", "caf\xe9".encode("latin-1"))
    _write(root / "stray.txt", "lyrics of nothing")
    _write(root / "stray.json", "{}")
    return root


def test_folder_rows_metadata_and_every_skip(folder):
    reader = next(r for r in acestep15_readers() if r.matches(folder))
    assert isinstance(reader, AceStep15Folder)
    report = BadInputReport(source=str(folder))
    manifest = reader.read(folder, report)
    rows = {r["key"]: r for r in manifest.rows}
    assert sorted(rows) == ["a", "album/c", "b", "d", "e", "g"]   # g is read here, its audio fails at decoding
    a, b, c, d, e = (rows[k] for k in ("a", "b", "album/c", "d", "e"))
    assert (a["caption"], a["lyrics"], a["is_instrumental"], a["language"]) == ("dreamy synth pop", "[verse]\nla la la",
                                                                                False, "unknown")
    assert a["id"] == stable_id("a") and len(a["id"]) == 8 and a["prompt_source"] == "caption"
    assert b["lyrics"] == "[chorus]\nfrom the fallback" and not b["is_instrumental"]
    assert (c["caption"], c["bpm"], c["keyscale"], c["timesignature"], c["language"], c["genre"]) == (
        "jazz trio", 96, "F major", "3", "ja", "jazz, swing")
    assert c["lyrics"] == "[Instrumental]" and c["is_instrumental"] is False   # sung: its language says so
    assert (d["caption"], d["bpm"], d["keyscale"], d["is_instrumental"]) == ("from the csv", 90, "A minor", True)
    assert (e["caption"], e["bpm"]) == ("opus caption", None)
    assert Path(a["audio_path"]).is_absolute() and a["duration"] is None
    items = prepare_items(manifest, None, SPEC, [], None, report)
    report.usable = len(items)
    assert sorted(it.row["key"] for it in items) == ["a", "album/c", "b", "d", "e"]
    e_item = next(it for it in items if it.row["key"] == "e")
    assert e_item.duration == pytest.approx(2.0, abs=0.01)   # the opus file decodes
    reasons = {Path(s.path).name: s.reason for s in report.skipped}
    assert sorted(reasons) == ["f.wav", "g.wav", "h.json", "i.caption.txt", "meta.csv", "stray.json", "stray.txt"]
    assert reasons["f.wav"].startswith("no caption: ACE-Step 1.5 trains on labeled songs only; write one into "
                                       "f.caption.txt")
    assert reasons["g.wav"].startswith("cannot decode audio")
    assert reasons["h.json"].startswith("metadata file is not valid JSON (Expecting property name")
    assert "is not UTF-8 text (byte 0xe9" in reasons["i.caption.txt"]
    assert reasons["meta.csv"] == "line 4: gone.wav names no audio file in the folder: check the name or delete the line"
    assert reasons["stray.txt"].startswith("lyrics file without audio: no audio file named stray")
    assert reasons["stray.json"].startswith("metadata file without audio")
    notes = "\n".join(report.live_notes())
    assert "meta.csv line 3: bpm 'fast' is not a number" in notes
    assert "b.txt" not in notes   # read as the fallback, not "not read"
    # offered: 9 audio files, 2 stray files and the CSV line naming no song; 5 used, 7 reported
    assert report.usable + len(report.skipped) == 12


def test_txt_beside_lyrics_is_noted_and_empty_csv_column_reported(tmp_path):
    root = tmp_path / "s"
    tone(root / "x.wav", seconds=1.0)
    _write(root / "x.caption.txt", "cap")
    _write(root / "x.lyrics.txt", "real lyrics")
    _write(root / "x.txt", "other text")
    _write(root / "list.csv", "name,bpm\nx.wav,100\n")
    report = BadInputReport()
    rows = AceStep15Folder().read(root, report).rows
    assert [(r["lyrics"], r["bpm"]) for r in rows] == [("real lyrics", None)]
    assert any("x.txt not read: x.lyrics.txt holds the lyrics" in n for n in report.live_notes())
    assert [s.reason.split(" (")[0] for s in report.skipped] == ["metadata CSV has no 'file' column"]


def test_json_overrides_and_is_instrumental(tmp_path):
    root = tmp_path / "s"
    tone(root / "x.wav", seconds=1.0)
    _write(root / "x.lyrics.txt", "la la")
    _write(root / "x.json", json.dumps({"caption": "from json", "is_instrumental": True, "prompt_override": "genre",
                                        "genre": "ambient"}))
    tone(root / "y.wav", seconds=1.0)
    _write(root / "y.json", json.dumps({"caption": "y", "bpm": True}))
    report = BadInputReport()
    rows = {r["key"]: r for r in AceStep15Folder().read(root, report).rows}
    assert (rows["x"]["caption"], rows["x"]["prompt_source"], rows["x"]["is_instrumental"]) == ("ambient", "genre", True)
    assert rows["y"]["bpm"] is None and any("bpm True is not a number" in n for n in report.live_notes())
    assert not report.skipped


def test_a_song_over_240_s_is_cut_to_its_first_240_s_and_said(tmp_path):
    """ACE-Step 1.5 truncates at 240 s when it preprocesses; so does the plugin's spec (dataset.max_duration), noted."""
    root = tmp_path / "s"
    tone(root / "long.flac", seconds=245.0, sr=8000)
    _write(root / "long.caption.txt", "a long song")
    report = BadInputReport()
    items = prepare_items(AceStep15Folder().read(root, report), None, SPEC, [], None, report)
    assert [it.duration for it in items] == [240.0]
    assert report.live_notes() == ["long.flac: 245 s long: only its first 240 s are used (dataset.max_duration)"]
