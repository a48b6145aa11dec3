"""SongGen's data formats: a song folder with stems, and SongGen's metadata .jsonl; every song that cannot be
used is reported with its reason, stems are streams of their song (never songs), relative paths resolve against
the jsonl's folder."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from audiotrain.data.report import BadInputReport
from audiotrain_songgen.readers import SongFolder, SongMetadata


def _wav(path: Path, seconds: float = 2.5, sr: int = 16000) -> Path:
    t = np.arange(int(sr * seconds)) / sr
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr)
    return path


def _reasons(report: BadInputReport) -> dict[str, str]:
    return {Path(s.path).name: s.reason for s in report.skipped}


def test_song_folder_with_stems_lyrics_and_problems(tmp_path):
    for name in ("a", "b", "c"):
        _wav(tmp_path / f"{name}.wav")
    (tmp_path / "a_prompt.txt").write_text("upbeat pop, female vocal, piano")
    (tmp_path / "a_lyrics.txt").write_text("la la la\nsing along")
    _wav(tmp_path / "a_vocal.wav")
    _wav(tmp_path / "a_acc.flac")
    (tmp_path / "b_prompt.txt").write_text("slow ballad")  # no lyrics: kept, noted
    (tmp_path / "c_prompt.txt").write_text("x" * 600)  # caption too long
    _wav(tmp_path / "orphan_vocal.wav")  # a stem without its song
    _wav(tmp_path / "d.wav")  # no description
    report = BadInputReport()
    reader = SongFolder()
    assert reader.matches(tmp_path) and not SongMetadata().matches(tmp_path)
    rows = {r["key"]: r for r in reader.read(tmp_path, report).rows}
    assert sorted(rows) == ["a", "b"]
    assert set(rows["a"]["audio"]) == {"mix", "vocal", "acc"}
    assert rows["a"]["audio"]["vocal"].endswith("a_vocal.wav") and rows["a"]["lyrics"] == "la la la\nsing along"
    assert rows["a"]["caption"] == "upbeat pop, female vocal, piano"
    assert set(rows["b"]["audio"]) == {"mix"} and rows["b"]["lyrics"] == ""
    reasons = _reasons(report)
    assert "600 characters" in reasons["c.wav"]
    assert reasons["orphan_vocal.wav"].startswith("vocal stem without its song: no audio file named orphan")
    assert reasons["d.wav"].startswith("no description file d_prompt.txt")
    assert any("b_lyrics.txt" in text and "empty lyrics" in text for _, text in report.notes)


def test_metadata_jsonl_relative_paths_energies_and_bad_lines(tmp_path):
    songs = tmp_path / "songs"
    songs.mkdir()
    _wav(songs / "one.wav")
    _wav(songs / "one_vocal.wav")
    _wav(songs / "two.wav")
    absolute = str((songs / "two.wav").resolve())
    lines = [
        {"fname": "one", "caption": "rock anthem", "lyrics": "hey\nho", "audio_file_name": "songs/one.wav",
         "vocal_file_name": "songs/one_vocal.wav", "vocal_energy": 1066.9, "language": "english", "duration": 2.5},
        {"fname": "two", "caption": "jazz trio", "lyrics": "", "audio_abspath": absolute},
        "not json at all",
        {"fname": "three", "caption": "", "audio_file_name": "songs/one.wav"},
        {"fname": "four", "caption": "metal", "audio_file_name": "songs/missing.wav"},
        {"fname": "five", "caption": "y" * 650, "audio_file_name": "songs/two.wav"},
        {"fname": "one", "caption": "again", "audio_file_name": "songs/two.wav"},
    ]
    meta = tmp_path / "metadata.jsonl"
    meta.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    reader = SongMetadata()
    assert reader.matches(tmp_path) and reader.matches(meta) and not SongFolder().matches(tmp_path)
    report = BadInputReport()
    rows = {r["key"]: r for r in reader.read(tmp_path, report).rows}
    assert sorted(rows) == ["one", "two"]
    assert rows["one"]["audio"] == {"mix": str((songs / "one.wav").resolve()),
                                    "vocal": str((songs / "one_vocal.wav").resolve())}
    assert rows["one"]["vocal_energy"] == 1066.9 and rows["one"]["language"] == "english"
    assert rows["two"]["audio"] == {"mix": absolute}
    reasons = [s.reason for s in report.skipped]
    assert reasons[0].startswith("line 3: not a JSON object")
    assert reasons[1].startswith("line 4: no caption")
    assert reasons[2].startswith("line 5: audio file songs/missing.wav not found (relative paths are relative to")
    assert reasons[3].startswith("line 6: the description is 650 characters long")
    assert reasons[4] == "line 7: repeats the song 'one' of line 1; using that one"
