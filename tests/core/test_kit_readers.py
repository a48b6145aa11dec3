"""The core's folder and list readers on real files: a sidecar folder (grouping by stem, duplicates, orphans,
missing / unreadable / empty text files, hidden entries, sub-folders) and LJSpeech-style lists, including
ai-voice-cloning's ``training/<voice>/train.txt``. Rows and report lines are compared exactly."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from audiotrain.data.readers.sidecar_folder import Clip, Sidecar, SidecarFolder
from audiotrain.data.readers.transcript_list import TranscriptList, find_list_file
from audiotrain.data.report import BadInputReport


def tone(path: Path, seconds: float = 0.5, sr: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr)
    return path


def text(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


class CaptionFolder(SidecarFolder):
    """A test format: ``X.wav`` + ``X_cap.txt`` (required, not empty, one line) [+ ``X_note.txt``]."""

    description = "caption folder"
    sidecars = (Sidecar("caption", "_cap.txt", "caption", "describe the clip in it", collapse=True, non_empty=True),
                Sidecar("note", "_note.txt", "note", required=False, missing_note="kept without a note"))

    def row(self, clip: Clip, root: Path) -> dict[str, Any]:
        return {"key": clip.key, "audio_path": str(clip.audio), "caption": clip.texts["caption"],
                "note": clip.texts["note"], "folder": clip.folder}


def relative(report: BadInputReport, root: Path) -> list[tuple[str, str]]:
    return [(Path(s.path).relative_to(root).as_posix(), s.reason) for s in report.skipped]


def test_sidecar_folder_rows_and_every_report_line(tmp_path):
    root = tmp_path / "clips"
    tone(root / "a.wav"), text(root / "a_cap.txt", "a dog\n  barks\n"), text(root / "a_note.txt", "loud")
    tone(root / "sub" / "b.flac"), text(root / "sub" / "b_cap.txt", "\ufeffrain")
    tone(root / "sub" / "b.wav")                                          # same stem, another format
    tone(root / "c.wav")                                                  # no caption
    tone(root / "d.wav"), text(root / "d_cap.txt", "  \n")                # empty caption
    tone(root / "e.wav"), text(root / "e_cap.txt", "caf\xe9".encode("latin-1"))  # not UTF-8
    text(root / "ghost_cap.txt", "no audio"), text(root / "sub" / "ghost_note.txt", "no audio either")
    tone(root / ".trash" / "x.wav"), text(root / ".trash" / "x_cap.txt", "hidden")
    report = BadInputReport()
    reader = CaptionFolder()
    assert reader.matches(root) and not reader.matches(root / "a.wav")
    manifest = reader.read(root, report)
    assert manifest.source == str(root.resolve()) and manifest.format == "caption folder"
    assert manifest.rows == [
        {"key": "a", "audio_path": str(root / "a.wav"), "caption": "a dog barks", "note": "loud", "folder": "."},
        {"key": "sub/b", "audio_path": str(root / "sub" / "b.flac"), "caption": "rain", "note": "", "folder": "sub"}]
    assert relative(report, root) == [
        ("sub/b.wav", "duplicate of b.flac (same name, another format); using that one"),
        ("c.wav", "no caption file c_cap.txt: describe the clip in it"),
        ("d_cap.txt", "caption file is empty: describe the clip in it"),
        ("e_cap.txt", "caption file is not UTF-8 text (byte 0xe9 at offset 3); save it as UTF-8"),
        ("ghost_cap.txt", "caption file without audio: no audio file named ghost (.mp3/.wav/.flac/.ogg/.opus) beside it"),
        ("sub/ghost_note.txt", "note file without audio: no audio file named ghost (.mp3/.wav/.flac/.ogg/.opus) beside it")]
    assert report.live_notes() == ["b.flac: no b_note.txt, kept without a note"]


def test_sidecar_folder_needs_audio_or_a_required_text_file(tmp_path):
    text(tmp_path / "only_note.txt", "x")
    assert not CaptionFolder().matches(tmp_path)
    text(tmp_path / "x_cap.txt", "x")
    assert CaptionFolder().matches(tmp_path)


VOICE_FIELDS = dict(text_field="transcript", speaker_field="voice")


def test_train_txt_rows_speakers_and_line_reports(tmp_path):
    base = tmp_path / "data"
    tone(base / "clips" / "one.wav"), tone(base / "two.flac"), text(base / "notes.mp4", "not audio")
    text(base / "train.txt", "clips/one.wav|First   line.\n\ntwo.flac|Second.|dave\nclips/one.wav|Again.\n"
                             "gone.wav|Missing.\nnotes.mp4|Video.\ntwo.flac|  \nonly-one-field\na|b|c|d\n")
    reader = TranscriptList(**VOICE_FIELDS, extra={"lang": "en"})
    assert reader.matches(base) and reader.matches(base / "train.txt") and find_list_file(base) == base / "train.txt"
    report = BadInputReport()
    manifest = reader.read(base, report)
    listfile = str((base / "train.txt").resolve())
    assert manifest.source == listfile
    assert manifest.rows == [
        {"key": "data/clips/one", "audio_path": str((base / "clips" / "one.wav").resolve()), "transcript": "First line.",
         "voice": "data", "lang": "en"},
        {"key": "dave/two", "audio_path": str((base / "two.flac").resolve()), "transcript": "Second.", "voice": "dave",
         "lang": "en"}]
    resolved = base.resolve()
    assert [(s.path, s.reason) for s in report.skipped] == [
        (listfile, "line 4: repeats the clip of line 1; using that one"),
        (listfile, f"line 5: audio file gone.wav not found (paths are relative to {resolved})"),
        (listfile, "line 6: notes.mp4: .mp4 is not an audio format audiotrain reads (.mp3/.wav/.flac/.ogg/.opus): "
                   "convert it to one of them"),
        (listfile, "line 7: the transcript is empty"),
        (listfile, "line 8: expected path|text or path|text|speaker, got 1 field(s)"),
        (listfile, "line 9: expected path|text or path|text|speaker, got 4 field(s)")]


def test_ljspeech_metadata_csv_prefers_the_normalized_text(tmp_path):
    lj = tmp_path / "LJSpeech"
    tone(lj / "wavs" / "LJ1.wav"), tone(lj / "wavs" / "LJ2.wav")
    text(lj / "metadata.csv", "LJ1|Mr. Smith|Mister Smith\nLJ2|in 1990.|\nLJ3|no audio|no audio\n")
    report = BadInputReport()
    rows = TranscriptList(**VOICE_FIELDS).read(lj, report).rows
    assert [(r["key"], r["transcript"], r["voice"]) for r in rows] == [
        ("LJSpeech/wavs/LJ1", "Mister Smith", "LJSpeech"), ("LJSpeech/wavs/LJ2", "in 1990.", "LJSpeech")]
    assert [s.reason for s in report.skipped] == [
        f"line 3: audio file wavs/LJ3.wav not found (paths are relative to {lj.resolve()})"]


def test_ai_voice_cloning_training_folder_as_is(tmp_path):
    """``training/<voice>/train.txt``: ``audio/<file>.wav|<whisper text>`` lines (leading space, no final newline)."""
    voice = tmp_path / "training" / "mira"
    tone(voice / "audio" / "take_0000.wav", sr=22050), tone(voice / "audio" / "take_0001.wav", sr=22050)
    text(voice / "train.txt", "audio/take_0000.wav| Hello there.\naudio/take_0001.wav| How are you?")
    text(voice / "validation.txt", "audio/take_0001.wav| How are you?")
    report = BadInputReport()
    rows = TranscriptList(**VOICE_FIELDS).read(voice, report).rows
    assert [(r["key"], r["transcript"], r["voice"]) for r in rows] == [
        ("mira/audio/take_0000", "Hello there.", "mira"), ("mira/audio/take_0001", "How are you?", "mira")]
    assert not report.skipped
    assert find_list_file(voice / "validation.txt") == voice / "validation.txt"  # a val_data= list reads the same way


def test_a_transcript_named_train_txt_is_not_a_list(tmp_path):
    text(tmp_path / "train.txt", "just what is said, no pipes")
    assert find_list_file(tmp_path) is None and not TranscriptList(**VOICE_FIELDS).matches(tmp_path)
