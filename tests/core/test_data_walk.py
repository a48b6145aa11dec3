"""``data=`` finds the data, not everything: a folder walk never enters environments, audiotrain's outputs, caches
or run directories (not even to list them), passes over cover art and notes without a word, and a report of many
skips shows a count and a few paths per kind of reason on the console while the saved report lists them all."""
from __future__ import annotations

import json
import os
from pathlib import Path

from audiotrain.data.cache import FeatureCache
from audiotrain.data.report import BadInputReport, reason_kind
from audiotrain.data.walk import dataset_files, not_entered
from audiotrain.data.readers.sidecar_folder import Clip, Sidecar, SidecarFolder
from tests.core.test_kit_readers import CaptionFolder, relative, text, tone


class TranscriptFolder(SidecarFolder):
    """A test format whose text files are plain ``X.txt``, as a voice folder has them."""

    description = "transcript folder"
    sidecars = (Sidecar("text", ".txt", "transcript", "write what is said into it"),)

    def row(self, clip: Clip, root: Path) -> dict:
        return {"key": clip.key, "audio_path": str(clip.audio), "text": clip.texts["text"]}


def clip(path: Path, caption: str = "a tone") -> None:
    tone(path), text(path.with_name(f"{path.stem}_cap.txt"), caption)


def project(root: Path) -> list[str]:
    """A project folder a user might give as ``data=.``: two real clips, and beside them everything that is not
    data, each holding clips (audio + caption) that would be rows if the walk went in. Returns the real keys."""
    clip(root / "a.wav"), clip(root / "album" / "b.flac")
    for junk in ("cover.jpg", "notes.md", "README.txt", "LICENSE", "album/folder.png", "album/rip.log",
                 "album/album.cue", "album/Thumbs.db", "desktop.ini", "notes.txt", "README_cap.txt",
                 "requirements.txt"):
        text(root / junk, "not data")
    text(root / ".venv" / "pyvenv.cfg", "home = /usr/bin\n")
    clip(root / ".venv" / "lib" / "python3.11" / "site-packages" / "scipy" / "io" / "tests" / "test.wav")
    text(root / "env" / "pyvenv.cfg", "home = /usr/bin\n")                         # a venv not named .venv
    clip(root / "env" / "lib" / "python3.11" / "site-packages" / "pkg" / "beep.wav")
    (root / "conda_env" / "conda-meta").mkdir(parents=True)
    clip(root / "conda_env" / "share" / "sounds" / "ding.wav")
    for pkg in ("node_modules/player", "vendor/site-packages/lib", "tools/__pycache__", "mypkg.egg-info"):
        clip(root / pkg / "sound.wav")
    run = root / "exps" / "logs" / "old" / "2024-05-01_10-00-00"
    text(run / ".hydra" / "config.yaml", "data: .\n")
    clip(run / "samples" / "step_24.wav")
    clip(root / "outputs" / "2024-05-01" / "10-00-00" / "gen.wav")
    clip(root / "multirun" / "2024-05-01" / "10-00-00" / "0" / "gen.wav")
    clip(root / "mlartifacts" / "1" / "abc" / "artifacts" / "samples" / "target.wav")
    cache = root / "features"                                                     # cache_dir=features
    FeatureCache(cache, "kit")
    clip(cache / "kit" / "stray.wav")
    elsewhere = root / "my_runs" / "first"                                       # paths.log_dir=my_runs
    text(elsewhere / ".hydra" / "config.yaml", "data: .\n")
    clip(elsewhere / "samples" / "s.wav")
    text(root / "my_runs" / "second" / "bad_inputs.json", "{}")                 # hydra.output_subdir=null
    clip(root / "my_runs" / "second" / "adapters" / "final" / "eval.wav")
    sweep = root / "sweeps" / "sweep_abc"
    text(sweep / "multirun.yaml", "hydra: {}\n")
    clip(sweep / "0" / "samples" / "s.wav")
    return ["a", "album/b"]


def test_a_project_folder_gives_only_its_clips_and_says_nothing_of_the_rest(tmp_path, monkeypatch):
    root = tmp_path / "proj"
    keys = project(root)
    listed: list[str] = []
    real_scandir = os.scandir

    def scandir(path=".", *a):  # what os.walk lists, to show pruned folders are never listed
        listed.append(Path(path).resolve().relative_to(root.resolve()).as_posix())
        return real_scandir(path, *a)

    monkeypatch.setattr(os, "scandir", scandir)
    reader, report = CaptionFolder(), BadInputReport()
    assert reader.matches(root)
    rows = reader.read(root, report).rows
    assert [r["key"] for r in rows] == keys
    assert report.skipped == []
    assert report.live_notes() == [
        "proj: not searched: exps/ (audiotrain's outputs), mlartifacts/ (audiotrain's outputs), multirun/ "
        "(audiotrain's outputs), outputs/ (audiotrain's outputs), my_runs/first/ (a run directory) and 2 more; "
        "to use audio in one of them, name that folder in data= (or move it)",
        "a.wav: no a_note.txt, kept without a note", "b.flac: no b_note.txt, kept without a note"]
    # listed: the data and the ordinary folders around it, never a pruned one (its name or marker is looked at)
    assert sorted(set(listed)) == [".", "album", "my_runs", "sweeps", "tools", "vendor"]


def test_why_each_folder_is_not_entered(tmp_path):
    root = tmp_path / "proj"
    project(root)
    why = {p: not_entered(root / p) for p in (
        ".venv", "env", "conda_env", "node_modules", "vendor/site-packages", "mypkg.egg-info", "tools/__pycache__", "exps", "outputs",
        "multirun", "mlartifacts", "features", "my_runs/first", "my_runs/second", "sweeps/sweep_abc", "album",
        "my_runs", "sweeps", "tools")}
    assert why == {
        ".venv": "hidden", "env": "a Python environment or package folder",
        "conda_env": "a Python environment or package folder", "node_modules": "a Python environment or package folder",
        "vendor/site-packages": "a Python environment or package folder",
        "mypkg.egg-info": "a Python environment or package folder",
        "tools/__pycache__": "a Python environment or package folder", "exps": "audiotrain's outputs",
        "outputs": "audiotrain's outputs", "multirun": "audiotrain's outputs", "mlartifacts": "audiotrain's outputs",
        "features": "a cache (CACHEDIR.TAG)", "my_runs/first": "a run directory", "my_runs/second": "a run directory",
        "sweeps/sweep_abc": "a run directory", "album": None, "my_runs": None, "sweeps": None, "tools": None}
    assert (root / "features" / "CACHEDIR.TAG").read_bytes().startswith(b"Signature: 8a477f597d28d172789f06886806bc55")


def test_the_named_folder_itself_is_read_whatever_it_is(tmp_path):
    """``data=exps/logs/old/RUN/samples`` or a folder holding a pyvenv.cfg: the user named it, so it is read."""
    root = tmp_path / "proj"
    project(root)
    samples = root / "exps" / "logs" / "old" / "2024-05-01_10-00-00" / "samples"
    assert [r["key"] for r in CaptionFolder().read(samples, BadInputReport()).rows] == ["step_24"]
    assert [p.name for p in dataset_files(root / "env")] == ["pyvenv.cfg"]  # its own site-packages still pruned


def test_only_environments_and_outputs_is_no_data(tmp_path):
    clip(tmp_path / "exps" / "logs" / "x" / "s.wav")
    text(tmp_path / "venv" / "pyvenv.cfg", "")
    clip(tmp_path / "venv" / "lib" / "t.wav")
    text(tmp_path / "README.md", "my project"), text(tmp_path / "cover.jpg", "")
    assert not CaptionFolder().matches(tmp_path)


def test_a_stray_text_file_is_still_reported_unless_it_is_a_known_name(tmp_path):
    clip(tmp_path / "a.wav")
    for name in ("ghost_cap.txt", "README_cap.txt", "LICENSE_cap.txt", "readme.md", "Cover.JPG"):
        text(tmp_path / name, "x")
    report = BadInputReport()
    assert [r["key"] for r in CaptionFolder().read(tmp_path, report).rows] == ["a"]
    assert relative(report, tmp_path) == [
        ("ghost_cap.txt", "caption file without audio: no audio file named ghost (.mp3/.wav/.flac/.ogg/.opus) beside it")]
    assert report.skipped[0].kind == "caption file without audio"


def test_well_known_text_files_are_not_stray_transcripts(tmp_path):
    tone(tmp_path / "a.wav"), text(tmp_path / "a.txt", "hello")
    tone(tmp_path / "notes.wav"), text(tmp_path / "notes.txt", "a clip named notes keeps its transcript")
    for name in ("README.txt", "LICENSE.txt", "requirements.txt", "todo.txt", "stray.txt"):
        text(tmp_path / name, "x")
    report = BadInputReport()
    rows = TranscriptFolder().read(tmp_path, report).rows
    assert [(r["key"], r["text"]) for r in rows] == [("a", "hello"), ("notes", "a clip named notes keeps its transcript")]
    assert relative(report, tmp_path) == [
        ("stray.txt", "transcript file without audio: no audio file named stray (.mp3/.wav/.flac/.ogg/.opus) beside it")]


def test_sixty_bad_files_are_a_count_and_a_few_paths_per_reason_on_the_console(tmp_path):
    data = tmp_path / "data"
    clip(data / "good1.wav"), clip(data / "good2.wav")
    for i in range(40):
        text(data / f"orphan_{i:02d}_cap.txt", "no audio beside me")
    for i in range(15):
        text(data / f"phone_{i:02d}.m4a", "aac")
    for i in range(5):
        tone(data / "nocap" / f"clip_{i}.wav")
    report = BadInputReport(source=str(data.resolve()))
    rows = CaptionFolder().read(data, report).rows
    report.usable = len(rows)
    assert len(rows) == 2 and len(report) == 60
    saved = tmp_path / "run" / "bad_inputs.txt"
    shown = report.summary(full_list=saved)
    lines = shown.splitlines()
    assert lines[0] == f"Data: {data.resolve()} — 2 usable, 60 skipped; the full list: {saved}"
    heads = [ln.strip() for ln in lines if not ln.startswith("    ")][1:]
    assert heads == ["40 skipped: caption file without audio",
                     "15 skipped: … is not an audio format audiotrain reads (…)",
                     "5 skipped: no caption file", "2 noted: no …, kept without a note"]
    assert sum("SKIPPED" in ln for ln in lines) == 3 + 3 + 3
    assert [ln.strip() for ln in lines if "more" in ln] == ["... and 37 more", "... and 12 more", "... and 2 more"]
    assert f"SKIPPED {data.resolve() / 'orphan_00_cap.txt'}: caption file without audio" in shown
    assert len(lines) == 1 + 3 * (1 + 3 + 1) + (1 + 2)  # the two kept clips' notes: shown, there are only two
    # the saved report keeps every one of the sixty, each with its kind
    txt, js = report.save(saved.parent)
    assert txt == saved and sum(ln.startswith("  SKIPPED ") for ln in txt.read_text().splitlines()) == 60
    full = txt.read_text()
    assert full.count("SKIPPED " + str(data.resolve() / "orphan_")) == 40 and "orphan_39_cap.txt" in full
    kinds = [s["kind"] for s in json.loads(js.read_text())["skipped"]]
    assert len(kinds) == 60 and kinds.count("caption file without audio") == 40


def test_a_short_report_is_the_full_list(tmp_path):
    report = BadInputReport(source="d", usable=3)
    report.add("d/x.wav", "cannot decode audio: the .wav file is corrupt, truncated or not audio")
    report.add("d/y_cap.txt", "caption file without audio: no audio file named y beside it")
    assert report.summary(full_list="run/bad_inputs.txt") == report.render() == (
        "Data: d — 3 usable, 2 skipped\n"
        "  SKIPPED d/x.wav: cannot decode audio: the .wav file is corrupt, truncated or not audio\n"
        "  SKIPPED d/y_cap.txt: caption file without audio: no audio file named y beside it")


def test_reason_kinds_drop_what_names_one_file():
    assert {r: reason_kind(r) for r in (
        "line 5: audio file wavs/gone.wav not found (paths are relative to /my data/voices)",
        "row 3 (song (1)): audio file x.mp3 not found (relative paths are tried from the working directory and /a b)",
        "duplicate of b.flac (same name, another format); using that one",
        "mix stream: audio file is empty (0 bytes)",
        "line 6: notes.mp4: .mp4 is not an audio format audiotrain reads (.mp3/.wav/.flac/.ogg/.opus): convert it",
        "tags file is not UTF-8 text (byte 0xe9 at offset 3); save it as UTF-8",
        "speaker 'alice' has 2 usable utterance(s); the model needs 3",
        "4.5 s is outside model.duration_range [1, 20] s")} == {
        "line 5: audio file wavs/gone.wav not found (paths are relative to /my data/voices)":
            "audio file … not found (paths are relative to …)",
        "row 3 (song (1)): audio file x.mp3 not found (relative paths are tried from the working directory and /a b)":
            "audio file … not found (relative paths are tried from the working directory and …)",
        "duplicate of b.flac (same name, another format); using that one":
            "duplicate of … (same name, another format); using that one",
        "mix stream: audio file is empty (0 bytes)": "audio file is empty (N bytes)",
        "line 6: notes.mp4: .mp4 is not an audio format audiotrain reads (.mp3/.wav/.flac/.ogg/.opus): convert it":
            "… is not an audio format audiotrain reads (…)",
        "tags file is not UTF-8 text (byte 0xe9 at offset 3); save it as UTF-8":
            "tags file is not UTF-8 text (byte N at offset N); save it as UTF-8",
        "speaker 'alice' has 2 usable utterance(s); the model needs 3":
            "speaker '…' has N usable utterance(s); the model needs N",
        "4.5 s is outside model.duration_range [1, 20] s": "N s is outside model.duration_range [N, N] s"}
    report = BadInputReport()
    report.add("x", "line 1: whatever x.wav", kind="my kind")  # a caller may name the kind itself
    assert report.skipped[0].kind == "my kind"
