"""``audiotrain data=.`` from a project folder trains on its songs only: not on a virtual environment's test wavs,
an earlier run's outputs, the feature cache or a run directory kept elsewhere; the outputs and run directories it
passed over are named in one line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf


def wav(path: Path, prompt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), (0.2 * np.sin(np.arange(48000 * 3) / 7.0)).astype(np.float32), 48000)
    if prompt is not None:
        path.with_name(f"{path.stem}_prompt.txt").write_text(prompt, encoding="utf-8")


def train(cwd: Path, data: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", AUDIOTRAIN_CACHE=str(cwd / "cache"))
    return subprocess.run([sys.executable, "-m", "audiotrain.cli.main", "model=acestep", "debug=smoke", f"data={data}",
                           "trainer.max_steps=2", "trainer.every_n_train_steps=2", "trainer.every_plot_step=0",
                           "trainer.eval_audio=false", "tracking=none", "trainer.stdin_control=false"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_data_dot_in_a_project_trains_on_its_songs_only(tmp_path):
    from audiotrain_acestep.demo_songs import demo_specs, write_song_folder

    proj = tmp_path / "proj"
    write_song_folder(proj / "songs", demo_specs(2, seconds=3.0))
    (proj / "songs" / "cover.jpg").write_bytes(b"\xff\xd8\xff")
    (proj / "README.md").write_text("my project\n"), (proj / "notes.txt").write_text("todo\n")
    (proj / ".venv").mkdir()
    (proj / ".venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    wav(proj / ".venv" / "lib" / "python3.11" / "site-packages" / "scipy" / "io" / "tests" / "test-44100Hz.wav")
    (proj / "venv").mkdir()
    (proj / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    wav(proj / "venv" / "lib" / "python3.11" / "site-packages" / "scipy" / "io" / "tests" / "data" / "test.wav")
    wav(proj / "exps" / "logs" / "old" / "2024-05-01_10-00-00" / "samples" / "step_24.wav", "a sample, not a song")
    old = proj / "old_runs" / "2024-05-01_11-00-00"                       # an earlier run with paths.log_dir=...
    (old / ".hydra").mkdir(parents=True)
    (old / ".hydra" / "config.yaml").write_text("data: .\n")
    wav(old / "samples" / "target_0.wav", "a sample, not a song")
    wav(proj / "cache" / "stray.wav", "in the cache")                      # AUDIOTRAIN_CACHE=proj/cache

    p = train(proj, ".")
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout + p.stderr
    assert f"Data: {proj.resolve()} — 2 usable, 0 skipped" in out, out[-3000:]
    for word in ("venv", "scipy", "exps/logs/old", "stray", "cover.jpg", "README", "notes.txt"):
        assert word not in out, (word, out[-3000:])
    # the folders passed over by a name or a file a user's own folder could have are named in one line
    told = (f"{proj.name}: not searched: exps/ (audiotrain's outputs), old_runs/2024-05-01_11-00-00/ (a run "
            "directory); to use audio in one of them, name that folder in data= (or move it)")
    assert out.count("not searched:") == 1 and told in out, out[-3000:]
    (report,) = proj.glob("exps/logs/*/*/bad_inputs.json")
    saved = json.loads(report.read_text())
    assert saved["usable"] == 2 and saved["skipped"] == [] and saved["notes"] == [told]
    assert (proj / "cache" / "CACHEDIR.TAG").is_file()


def test_many_skipped_files_are_counted_per_reason_on_the_console_and_listed_in_the_run(tmp_path):
    from audiotrain_acestep.demo_songs import demo_specs, write_song_folder

    songs = tmp_path / "songs"
    write_song_folder(songs, demo_specs(2, seconds=3.0))
    for i in range(50):
        (songs / f"orphan_{i:02d}_prompt.txt").write_text("jazz", encoding="utf-8")
    for i in range(10):
        wav(songs / "untagged" / f"take_{i}.wav")
    p = train(tmp_path, str(songs))
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout + p.stderr
    (full,) = tmp_path.glob("exps/logs/*/*/bad_inputs.txt")
    assert f"Data: {songs.resolve()} — 2 usable, 60 skipped; the full list: {full}" in out, out[-3000:]
    assert "  50 skipped: tags file without audio\n" in out and "  10 skipped: no tags file\n" in out
    assert out.count("SKIPPED ") == 6 and "... and 47 more" in out and "... and 7 more" in out
    saved = full.read_text()
    assert saved.count("SKIPPED ") == 60 and "orphan_49_prompt.txt" in saved and "take_9.wav" in saved
