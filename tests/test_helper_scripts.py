"""The repository's small things a newcomer meets first: helper scripts answer --help with help (and write
nothing), and what a demo or a run leaves behind is ignored by git."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (ROOT / "experiments").glob("*.py") if "__main__" in p.read_text())


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_script_help_is_help_and_writes_nothing(script: Path, tmp_path: Path):
    out = subprocess.run([sys.executable, str(script), "--help"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage:"), out.stdout[:300]
    assert list(tmp_path.iterdir()) == []  # no folder named "--help", no output of a real run


def test_demo_script_writes_the_songs_it_says(tmp_path: Path):
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "make_demo_data.py"), "songs", "--count", "2"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "songs").iterdir()) == [
        "demo_song_01.mp3", "demo_song_01_lyrics.txt", "demo_song_01_prompt.txt",
        "demo_song_02.mp3", "demo_song_02_lyrics.txt", "demo_song_02_prompt.txt"]
    bad = subprocess.run([sys.executable, str(ROOT / "experiments" / "make_demo_data.py"), "--count", "0"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--count 0: give at least 1 song" in bad.stderr


LEFT_BEHIND = ["exps/logs/x/config.yaml", "mlflow.db", "mlartifacts/1/a/artifacts/x.wav", "demo_data/songs/a.mp3",
               "outputs/2026-12-04/x.log", "multirun/2026-12-04/0/x.log", ".audiotrain_cache/features/x.pt",
               ".venv/bin/python"]


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                    reason="needs git and a git checkout of the repository (CI runs a fresh clone)")
def test_what_runs_leave_behind_is_ignored_by_git():
    out = subprocess.run(["git", "check-ignore", "--no-index", "-v", *LEFT_BEHIND], cwd=ROOT, capture_output=True,
                         text=True)
    ignored = {line.split("\t", 1)[1] for line in out.stdout.splitlines()}
    assert ignored == set(LEFT_BEHIND), f"not ignored: {sorted(set(LEFT_BEHIND) - ignored)}"


def test_gpu_bench_without_a_gpu_is_one_sentence_and_exit_0(tmp_path: Path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: make bench-gpu runs the real thing there")
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "bench_gpu.py")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("make bench-gpu needs a CUDA GPU: this machine has none") and out.stdout.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
