"""SongGen as a user runs it: ``audiotrain model=songgen data=DIR`` on a synthetic folder of songs with stems, one
corrupt file and one song without lyrics (a subprocess, the real CLI); the dual-track pattern on the stems; the
overfit proof (teacher-forced top-1 accuracy of codebook 0 >= 0.9 on one song)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from audiotrain_songgen.example_data import write_song, write_song_folder

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> Path:
    folder = write_song_folder(tmp_path_factory.mktemp("songs"), count=3, seconds=3.0)
    write_song(folder, "instrumental", 3.0, seed=7, lyrics="")  # no _lyrics.txt: trained with empty lyrics
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt this is not audio")
    (folder / "broken_prompt.txt").write_text("a song that cannot be decoded")
    return folder


def _run(tmp_path: Path, *overrides: str) -> tuple[subprocess.CompletedProcess, Path]:
    logs = tmp_path / "logs"
    cmd = [sys.executable, "-m", "audiotrain.cli.main", "model=songgen", "tracking=none", "trainer.progress_bar=false",
           f"paths.log_dir={logs}", f"cache_dir={tmp_path / 'cache'}", "dataset.num_workers=0", *overrides]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    runs = sorted(logs.glob("*/*/summary.json"))
    return out, (runs[-1].parent if runs else logs)


@pytest.mark.slow
def test_smoke_run_reports_the_bad_song_and_trains_a_lora(songs, tmp_path):
    out, run = _run(tmp_path, f"data={songs}", "debug=smoke")
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert "4 usable, 1 skipped" in text
    assert "broken.wav" in text and "Traceback" not in text
    assert "instrumental_lyrics.txt" in text  # the note about the song without lyrics
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 24
    metrics = summary["final_metrics"]
    assert {f"train/code_loss_{k}" for k in range(8)} <= set(metrics)
    assert {f"train/loss_weight_{k}" for k in range(8)} <= set(metrics)
    assert "train/vocal_loss" in metrics  # mixed_pro: the 0.1 x vocal-stem loss
    assert (run / "adapters" / "final" / "peft" / "adapter_config.json").is_file()
    config = json.loads((run / "adapters" / "final" / "peft" / "adapter_config.json").read_text())
    assert set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}


@pytest.mark.slow
def test_dual_track_trains_on_the_stems_and_reports_songs_without_them(songs, tmp_path):
    solo = tmp_path / "solo"
    solo.mkdir()
    for p in songs.glob("song_01*"):
        (solo / p.name).write_bytes(p.read_bytes())
    write_song(solo, "nostems", 3.0, seed=9)
    for stem in solo.glob("nostems_*.wav"):
        stem.unlink()
    out, run = _run(tmp_path, f"data={solo}", "debug=smoke", "trainer.max_steps=4",
                    "model.track_pattern=interleaving_A_V")
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert "no acc or vocal stem: model.track_pattern=interleaving_A_V trains on" in text
    metrics = json.loads((run / "summary.json").read_text())["final_metrics"]
    assert "train/vocal_loss" not in metrics and "train/code_loss_7" in metrics


@pytest.mark.slow
def test_overfitting_one_song_drives_codebook_0_accuracy_above_0_9(songs, tmp_path):
    out, run = _run(tmp_path, f"data={songs}", "debug=overfit")
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final_metrics"]["train/acc_0"] >= 0.9
    fixed = summary["train_fixed_loss"]
    assert fixed[-1][1] < 0.1 * fixed[0][1]


@pytest.mark.slow
def test_sweep_over_rank_and_track_pattern_is_a_parent_with_four_children(tmp_path):
    """`audiotrain -m model=songgen ... lora.r=4,8 model.track_pattern=mixed_pro,interleaving_A_V`: one parent
    run and four finished children in MLflow, each with its swept values and its own losses."""
    from audiotrain.plugins import registry
    from tests.core.conftest import Sweep, parent_and_children, steps_of

    data = registry.get("songgen").example_data(tmp_path / "songs", 2)
    sweep = Sweep(tmp_path, [])
    p = sweep.run("-m", "model=songgen", f"data={data}", "debug=smoke", "trainer.max_steps=2",
                  "trainer.every_plot_step=0", "lora.r=4,8", "model.track_pattern=mixed_pro,interleaving_A_V",
                  timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    client = sweep.client()
    parent, children, _ = parent_and_children(client, experiment="audiotrain/songgen")
    assert parent.info.status == "FINISHED" and len(children) == 4
    seen = set()
    for c in children:
        r, pattern = int(c.data.params["override.lora.r"]), c.data.params["override.model.track_pattern"]
        seen.add((r, pattern))
        assert c.info.status == "FINISHED" and steps_of(client, c.info.run_id) == [1, 2]
        assert c.data.metrics["train/loss"] > 0
        # mixed_pro logs its vocal loss, the interleaved pattern has none (one stream per codebook either way)
        names = set(c.data.metrics)
        assert {f"train/code_loss_{k}" for k in range(8)} <= names and "train/weighted_loss" in names
        assert ("train/vocal_loss" in names) == (pattern == "mixed_pro")
    assert seen == {(4, "mixed_pro"), (4, "interleaving_A_V"), (8, "mixed_pro"), (8, "interleaving_A_V")}
