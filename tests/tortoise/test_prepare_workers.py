"""tortoise-prepare over ``--workers`` processes: every file it writes (the wavs, slices, whisper.json, the lists and
the report) byte for byte the same with one worker and with two, Whisper included; a clip a worker fails on is that
clip's line in the report; a worker that dies is one sentence; a bad --workers value is one sentence."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from audiotrain_tortoise.prepare import prepare
from tests.tortoise.tiny_whisper import make_tiny_whisper
from tests.tortoise.voice_clips import CLIPS, SR, make_voice, needs_tools, speech, write
from tests.weight_files import assert_sentence


@pytest.fixture(scope="module")
def voice(tmp_path_factory) -> tuple[Path, Path]:
    """(the standard voice folder + two clips without a transcript, a tiny Whisper)."""
    root = tmp_path_factory.mktemp("tw")
    folder = make_voice(root / "voice")
    write(folder / "hotel.wav", speech("Whisper hears this one.", 2.2, SR), SR)
    write(folder / "india.wav", speech("And this one too.", 3.1, SR), SR)
    return folder, make_tiny_whisper(root / "tiny-whisper")


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run(voice_dir: Path, whisper: Path, out: Path, workers: str, capsys) -> tuple[int, str, str]:
    rc = prepare([str(voice_dir), "--output", str(out), "--whisper", str(whisper), "--workers", workers])
    got, err = capsys.readouterr()
    return rc, got, err


@needs_tools
def test_one_worker_and_two_write_the_same_bytes(voice, tmp_path, capsys):
    folder, whisper = voice
    one, two = tmp_path / "one", tmp_path / "two"
    rc, out1, err = run(folder, whisper, one, "1", capsys)
    assert rc == 0, err
    rc, out2, err = run(folder, whisper, two, "2", capsys)
    assert rc == 0, err
    assert out1.replace(str(one), "OUT") == out2.replace(str(two), "OUT")
    a, b = files(one), files(two)
    wavs = [k for k in a if k.endswith(".wav")]
    assert len(wavs) >= len(CLIPS) + 2 and "whisper.json" in a and "bad_inputs.txt" in a
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    assert "10 clips: 2 transcribed with Whisper, 7 transcripts reused (7 from .txt files), 1 skipped" in out1


@needs_tools
def test_a_clip_a_worker_fails_on_is_reported_and_the_rest_are_kept(voice, tmp_path, capsys, monkeypatch):
    from audiotrain_tortoise import segments as S

    folder, whisper = voice
    real = S.cut

    def cut(audio, seg, *a, **k):  # the (sliced) golf clip: a library error inside a worker
        if "word" in seg["text"]:
            raise RuntimeError("buffer too small")
        return real(audio, seg, *a, **k)

    monkeypatch.setattr(S, "cut", cut)  # set before the fork: the workers inherit it
    rc, out, err = run(folder, whisper, tmp_path / "o", "2", capsys)
    assert rc == 0, err
    report = (tmp_path / "o" / "bad_inputs.txt").read_text()
    assert "golf.wav: cannot be prepared (RuntimeError: buffer too small)" in report
    assert "10 clips: 2 transcribed with Whisper, 6 transcripts reused (6 from .txt files), 2 skipped" in out
    assert (tmp_path / "o" / "audio" / "alpha.wav").is_file()


@needs_tools
def test_a_worker_that_dies_is_one_sentence(voice, tmp_path, capsys, monkeypatch):
    from audiotrain_tortoise import segments as S

    folder, whisper = voice
    monkeypatch.setattr(S, "cut", lambda *a, **k: os._exit(9))  # the first sliced clip kills its process
    rc, _, err = run(folder, whisper, tmp_path / "o", "2", capsys)
    assert rc == 2
    assert err.startswith("audiotrain tortoise-prepare: A data-preparation worker died")
    assert_sentence(err, "(--workers 1)")


def test_a_bad_workers_value_is_one_sentence(tmp_path, capsys):
    folder = tmp_path / "v"
    folder.mkdir()
    (folder / "a.wav").write_bytes(b"x")
    for bad in ("many", "-2", "1.5"):
        rc = prepare([str(folder), "--workers", bad])
        _, err = capsys.readouterr()
        assert rc == 2 and f"--workers {bad} is not a number of processes" in err, err
        assert_sentence(err)
