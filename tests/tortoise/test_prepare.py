"""tortoise-prepare (spec tortoise.md §2.1-2.3): exact train.txt/validation.txt for clips with known transcripts and
lengths, AIVC's thresholds and culls each reported, the sanitise rule, slicing with offsets and its rejections,
Trim Silence, 22,050 Hz mono PCM16 output, the output read back by the core's TranscriptList, one-sentence errors;
and a tiny random Whisper (built offline) transcribing every readable clip into whisper.json, --skip-existing
re-running only a new clip."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiotrain.data.audio_io import decode, resample
from audiotrain.data.report import BadInputReport
from audiotrain.safe_files import BadFileError
from audiotrain_tortoise import segments as S
from audiotrain_tortoise.prepare import prepare
from audiotrain_tortoise.silence import trim_leading_silence
from tests.tortoise.tiny_whisper import LANGUAGES, make_tiny_whisper
from tests.tortoise.voice_clips import CLIPS, SR, TRAIN, VALIDATION, lines, make_voice, needs_tools, speech, write
from tests.weight_files import assert_sentence


def run(argv, capsys) -> tuple[int, str, str]:
    rc = prepare([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def one_thread():
    """Tiny models on 2 shared cores: one torch thread is hundreds of times faster than two that fight."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory) -> Path:
    return make_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny-whisper")


# ---- the rules, as functions ---------------------------------------------------------------------------------

def test_sanitise_merges_short_segments_into_the_previous_one():
    segs = [{"id": 7, "start": 0.0, "end": 2.0, "text": " One"},
            {"id": 8, "start": 2.0, "end": 2.3, "text": " two"},       # 0.3 s: appended, end extended
            {"id": 9, "start": 2.5, "end": 5.0, "text": " Three"},
            {"id": 10, "start": 4.0, "end": 4.5, "text": " inside"},   # 0.5 s within the one before: dropped
            {"id": 11, "start": 5.0, "end": 5.59, "text": " four"},    # 0.59 s: merged
            {"id": 12, "start": 5.6, "end": 6.2, "text": " Five"}]     # exactly 0.6 s: kept
    assert S.sanitise(segs) == [{"id": 0, "start": 0.0, "end": 2.3, "text": " One two"},
                                {"id": 1, "start": 2.5, "end": 5.59, "text": " Three four"},
                                {"id": 2, "start": 5.6, "end": 6.2, "text": " Five"}]
    # a short first segment has nothing before it: kept (the line rules cull it)
    assert S.sanitise([{"start": 0.0, "end": 0.3, "text": "a"}, {"start": 0.3, "end": 2.0, "text": "b"}]) == [
        {"id": 0, "start": 0.0, "end": 0.3, "text": "a"}, {"id": 1, "start": 0.3, "end": 2.0, "text": "b"}]
    assert S.sanitise(S.sanitise(segs)) == S.sanitise(segs)


def test_line_rules_and_split():
    assert S.MAX_SAMPLES == 255995 and abs(S.MAX_SECONDS - 11.6097505669) < 1e-9
    assert S.cull_reason("ok text", 13231) is None and S.cull_reason("ok text", 255994) is None
    assert S.cull_reason("ok text", 13230) == "0.60 s, not longer than the 0.6 s a clip needs"
    assert "not shorter than the 11.61 s" in S.cull_reason("ok text", 255995)
    assert S.cull_reason("x" * 200, 30000) is None
    assert S.cull_reason("x" * 201, 30000) == "the text is 201 characters, more than the 200 TorToiSe takes"
    assert S.cull_reason("  ", 30000) == "the transcript is empty"
    assert "'|'" in S.cull_reason("a|b", 30000)
    assert S.needs_segments("x" * 201, 100) and S.needs_segments("x", 255995) and not S.needs_segments("x", 255994)
    assert S.goes_to_validation("x" * 11, 10 * SR, 12, 1) and not S.goes_to_validation("x" * 12, 10 * SR, 12, 1)
    assert S.goes_to_validation("x" * 50, SR - 1, 12, 1) and not S.goes_to_validation("x" * 50, SR - 1, 12, 0)
    assert S.render([("audio/a.wav", " Hi."), ("audio/b.wav", "Yo")]) == "audio/a.wav| Hi.\naudio/b.wav|Yo"
    assert S.line_text(" a\tb\nc") == " a b c"


def test_cut_offsets_and_rejections():
    clip = np.concatenate([np.sin(np.arange(3 * SR) / 5.0).astype(np.float32), np.zeros(SR, np.float32)])
    piece = S.cut(clip, {"start": 0.5, "end": 2.8}, 0.1, -0.1)
    assert piece.problem is None and piece.start == 13230 and piece.audio.size == 59535 - 13230
    assert S.cut(clip, {"start": 0.0, "end": 0.7}, 0.0, -0.2).problem == \
        "0.50 s, shorter than the 0.6 s a slice needs"
    assert S.cut(clip, {"start": 3.1, "end": 3.9}).problem == "empty: silence (not one negative sample)"
    assert S.cut(clip, {"start": 5.0, "end": 6.0}).problem == "empty: outside the clip"
    assert S.cut(clip, {"start": 2.5, "end": 9.0}, 0, 0).audio.size == clip.size - int(2.5 * SR)  # clamped
    assert S.cut(clip, {"start": 3.1, "end": 3.9}, trim_silence=True).problem == \
        "empty: nothing but silence once its leading silence is trimmed"


def test_trim_leading_silence_finds_the_onset():
    tone = (0.5 * np.sin(np.arange(SR) / 3.0)).astype(np.float32)
    quiet = np.random.RandomState(0).uniform(-1e-4, 1e-4, SR // 2).astype(np.float32)
    skip = trim_leading_silence(np.concatenate([quiet, tone]), SR)
    lead_in = int(0.05 * SR)
    assert SR // 2 - lead_in - int(0.02 * SR) <= skip <= SR // 2 - lead_in  # within a frame before the lead-in
    assert trim_leading_silence(tone, SR) == 0
    assert trim_leading_silence(quiet, SR) == quiet.size
    click = np.concatenate([quiet, np.full(20, 0.9, np.float32), quiet, tone])  # 1 ms click: not the start
    assert trim_leading_silence(click, SR) > SR // 2


# ---- transcripts beside the clips, no Whisper ---------------------------------------------------------------

@needs_tools
def test_transcripts_beside_clips_give_aivc_lists(tmp_path, capsys):
    voice = make_voice(tmp_path / "voices" / "myvoice")
    rc, out, err = run([voice], capsys)
    assert rc == 0, err
    ds = Path("training/myvoice")  # AIVC's layout, relative to the working directory
    assert lines(ds / "train.txt") == TRAIN
    assert lines(ds / "validation.txt") == VALIDATION
    report = (ds / "bad_inputs.txt").read_text()
    assert "corrupt.wav: cannot decode audio" in report
    assert "echo.wav: segment 0 (0.00-12.50 s): audio/echo_0000.wav: 12.50 s, not shorter than the 11.61 s" in report
    assert "foxtrot.wav: audio/foxtrot.wav: 0.40 s, not longer than the 0.6 s a clip needs; the line is culled" \
        in report
    assert "golf.wav: segment 0 (0.00-3.00 s): audio/golf_0000.wav: the text is 225 characters, more than the 200" \
        in report
    assert "8 clips: 0 transcribed with Whisper, 7 transcripts reused (7 from .txt files), 1 skipped" in out
    assert "train.txt: 2 lines, validation.txt: 2 lines, 3 culled" in out
    assert out.strip().endswith("Next: audiotrain model=tortoise data=training/myvoice")
    results = json.loads((ds / "whisper.json").read_text())
    assert sorted(results) == sorted(CLIPS)
    assert results["alpha.wav"] == {"text": CLIPS["alpha.wav"][0], "language": "en", "segments": [
        {"id": 0, "start": 0.0, "end": 3.0, "text": CLIPS["alpha.wav"][0]}]}
    assert json.loads((ds / "whisper.unsanitized.json").read_text()) == results
    # every clip whole at 22,050 Hz, one channel, PCM 16-bit
    for name, (_, seconds, _) in CLIPS.items():
        info = sf.info(ds / "audio" / f"{Path(name).stem}.wav")
        assert (info.samplerate, info.channels, info.subtype, info.format) == (SR, 1, "PCM_16", "WAV")
        if not name.endswith(".mp3"):  # (mp3 adds its encoder's padding)
            assert info.frames == round(seconds * SR)
    # the stereo mp3: its first channel, not a mix (the right one is silent: a mix would be half as loud)
    written, _ = sf.read(ds / "audio" / "delta.wav", dtype="float32")
    src, rate = decode(voice / "delta.mp3")
    assert np.abs(written - resample(src[:1], rate, SR)[0]).max() < 1e-4
    assert np.abs(written).max() > 0.2


@needs_tools
def test_thresholds_move_lines_between_the_lists(tmp_path, capsys):
    voice = make_voice(tmp_path / "v", names=("alpha.wav", "bravo.flac", "charlie.wav"), corrupt=False)
    rc, _, err = run([voice, "--output", "a", "--validation-audio-length", "0"], capsys)
    assert rc == 0, err
    assert lines(Path("a/train.txt")) == [TRAIN[0], VALIDATION[1]] and lines(Path("a/validation.txt")) == VALIDATION[:1]
    rc, _, err = run([voice, "--output", "b", "--validation-text-length", "0", "--validation-audio-length", "0"],
                     capsys)
    assert rc == 0, err
    assert lines(Path("b/train.txt")) == [TRAIN[0], *VALIDATION] and lines(Path("b/validation.txt")) == []
    rc, _, err = run([voice, "--output", "c", "--validation-text-length", "30"], capsys)
    assert rc == 0, err  # "A short but long enough line." is 29 characters
    assert lines(Path("c/train.txt")) == [TRAIN[0]] and lines(Path("c/validation.txt")) == VALIDATION


@needs_tools
def test_everything_in_validation_is_one_sentence_with_the_fix(tmp_path, capsys):
    voice = make_voice(tmp_path / "v", names=("alpha.wav", "bravo.flac"), corrupt=False)
    rc, out, err = run([voice, "--output", "ds", "--validation-text-length", "100"], capsys)
    assert rc == 2
    assert_sentence(err, "all 2 lines went to validation.txt", "train.txt is empty", "--validation-text-length 100",
                    "lower them")
    assert lines(Path("ds/train.txt")) == [] and len(lines(Path("ds/validation.txt"))) == 2  # written, to look at
    assert "Next:" not in out


@needs_tools
def test_nothing_usable_is_one_sentence(tmp_path, capsys):
    voice = make_voice(tmp_path / "v", names=("foxtrot.wav",))
    rc, out, err = run([voice, "--output", "ds"], capsys)
    assert rc == 2
    assert_sentence(err, "no clip of", "gave a usable line", "bad_inputs.txt")
    assert "corrupt.wav" in out and "0.40 s" in out


def test_no_whisper_error_names_the_setting(tmp_path, capsys):
    voice = tmp_path / "v"
    voice.mkdir()
    for i in range(5):
        sf.write(voice / f"clip{i}.wav", np.full(SR, 0.1, np.float32), SR)
    (voice / "clip0.txt").write_text("Known.")
    rc, out, err = run([voice], capsys)
    assert rc == 2 and out == ""
    assert_sentence(err, "4 of 5 clips have no transcript", "clip1.wav, clip2.wav, clip3.wav, ...", "--whisper DIR",
                    "model.whisper_path=DIR", ".txt")
    assert not Path("training").exists()  # nothing half-done


@needs_tools
def test_output_reads_with_the_core_transcript_list(tmp_path, capsys):
    from audiotrain.data.readers.transcript_list import TranscriptList

    voice = make_voice(tmp_path / "voices" / "myvoice")
    assert run([voice, "--validation-text-length", "0", "--validation-audio-length", "0"], capsys)[0] == 0
    report = BadInputReport()
    manifest = TranscriptList(text_field="text", speaker_field="speaker").read(Path("training/myvoice"), report)
    rows = list(manifest.rows)
    assert len(report) == 0
    assert [(Path(r["audio_path"]).name, r["text"], r["speaker"]) for r in rows] == [
        ("alpha.wav", CLIPS["alpha.wav"][0], "myvoice"), ("bravo.wav", "Hi there.", "myvoice"),
        ("charlie.wav", CLIPS["charlie.wav"][0], "myvoice"), ("delta.wav", CLIPS["delta.mp3"][0], "myvoice")]
    assert all(Path(r["audio_path"]).is_file() for r in rows)


# ---- segments from whisper.json: slicing --------------------------------------------------------------------

def _india(voice: Path, out: Path) -> None:
    """A 6 s clip (speech-like 0-5 s, zeros 5-6 s) and a hand-made whisper.json entry for it in ``out``."""
    clip = np.concatenate([(0.3 * np.sin(np.arange(5 * SR) / 4.0)).astype(np.float32), np.zeros(SR, np.float32)])
    voice.mkdir(parents=True)
    sf.write(voice / "india.wav", clip, SR)
    segments = [(0.0, 0.5, " Oh."), (0.5, 2.5, " The first real sentence here."), (2.5, 2.8, " and"),
                (3.0, 4.8, " Another sentence follows now."), (5.05, 5.95, " silence")]
    entry = {"text": "".join(s[2] for s in segments), "language": "en",
             "segments": [{"id": i, "start": a, "end": b, "text": t} for i, (a, b, t) in enumerate(segments)]}
    out.mkdir(parents=True)
    (out / "whisper.json").write_text(json.dumps({"india.wav": entry}))


def test_slices_with_offsets_and_their_rejections(tmp_path, capsys):
    voice, out = tmp_path / "v", tmp_path / "ds"
    _india(voice, out)
    original = json.loads((out / "whisper.json").read_text())
    rc, text, err = run([voice, "--output", out, "--slice", "--start-offset", "0.1", "--end-offset", "-0.1"], capsys)
    assert rc == 0, err
    assert lines(out / "train.txt") == ["audio/india_0001.wav| The first real sentence here. and",
                                        "audio/india_0002.wav| Another sentence follows now."]
    assert lines(out / "validation.txt") == []
    # sanitised: " and" (0.3 s) merged into segment 1; the raw result kept beside it
    assert [(s["id"], s["start"], s["end"]) for s in json.loads((out / "whisper.json").read_text())["india.wav"]
            ["segments"]] == [(0, 0.0, 0.5), (1, 0.5, 2.8), (2, 3.0, 4.8), (3, 5.05, 5.95)]
    assert json.loads((out / "whisper.unsanitized.json").read_text()) == original
    assert sf.info(out / "audio/india_0001.wav").frames == round(2.7 * SR) - round(0.6 * SR)
    assert sf.info(out / "audio/india_0002.wav").frames == round(4.7 * SR) - round(3.1 * SR)
    assert not (out / "audio/india_0000.wav").exists() and not (out / "audio/india_0003.wav").exists()
    report = (out / "bad_inputs.txt").read_text()
    assert "segment 0 (0.00-0.50 s): audio/india_0000.wav: the slice is rejected: 0.30 s, shorter than the 0.6 s" \
        in report
    assert "segment 3 (5.05-5.95 s): audio/india_0003.wav: the slice is rejected: empty: silence" in report
    assert "1 clips: 0 transcribed with Whisper, 1 transcripts reused (1 from whisper.json)" in text
    assert "2 culled" in text


def test_trim_silence_cuts_the_leading_silence_of_slices(tmp_path, capsys):
    voice, out = tmp_path / "v", tmp_path / "ds"
    voice.mkdir()
    clip = np.concatenate([np.zeros(SR // 2, np.float32), (0.3 * np.sin(np.arange(2 * SR) / 4.0)).astype(np.float32)])
    sf.write(voice / "juliet.wav", clip, SR)
    out.mkdir()
    (out / "whisper.json").write_text(json.dumps({"juliet.wav": {"text": " Hello.", "language": "en", "segments": [
        {"id": 0, "start": 0.0, "end": 2.5, "text": " Hello."}]}}))
    argv = [voice, "--output", out, "--slice", "--validation-text-length", "0"]
    assert run(argv, capsys)[0] == 0
    assert sf.info(out / "audio/juliet_0000.wav").frames == clip.size
    assert run([*argv, "--trim-silence"], capsys)[0] == 0
    frames = sf.info(out / "audio/juliet_0000.wav").frames
    kept_lead_in = frames - 2 * SR
    assert int(0.05 * SR) - 1 <= kept_lead_in <= int(0.05 * SR) + int(0.02 * SR)


def test_unsliced_long_clip_switches_to_its_segments(tmp_path, capsys):
    voice, out = tmp_path / "v", tmp_path / "ds"
    voice.mkdir()
    sf.write(voice / "kilo.wav", (0.3 * np.sin(np.arange(14 * SR) / 4.0)).astype(np.float32), SR)
    sf.write(voice / "lima.wav", (0.3 * np.sin(np.arange(3 * SR) / 4.0)).astype(np.float32), SR)
    out.mkdir()
    (out / "whisper.json").write_text(json.dumps({
        "kilo.wav": {"text": " First half. Second half.", "language": "en", "segments": [
            {"id": 0, "start": 0.0, "end": 7.0, "text": " First half."},
            {"id": 1, "start": 7.0, "end": 14.0, "text": " Second half."}]},
        "lima.wav": {"text": " Three seconds, two segments.", "language": "en", "segments": [
            {"id": 0, "start": 0.0, "end": 1.5, "text": " Three seconds,"},
            {"id": 1, "start": 1.5, "end": 3.0, "text": " two segments."}]}}))
    assert run([voice, "--output", out], capsys)[0] == 0
    # 14 s >= 11.61 s: its segments; lima (3 s, short text) stays whole
    assert lines(out / "train.txt") == ["audio/kilo_0000.wav| First half.", "audio/kilo_0001.wav| Second half.",
                                        "audio/lima.wav| Three seconds, two segments."]
    assert sf.info(out / "audio/kilo_0001.wav").frames == 7 * SR


def test_edited_lines_survive_a_rerun(tmp_path, capsys):
    voice, out = tmp_path / "v", tmp_path / "ds"
    voice.mkdir()
    sf.write(voice / "mike.wav", (0.3 * np.sin(np.arange(3 * SR) / 4.0)).astype(np.float32), SR)
    out.mkdir()
    (out / "whisper.json").write_text(json.dumps({"mike.wav": {"text": " Helo wrold, it is me.", "language": "en",
                                                               "segments": [{"id": 0, "start": 0.0, "end": 3.0,
                                                                             "text": " Helo wrold, it is me."}]}}))
    assert run([voice, "--output", out], capsys)[0] == 0
    assert lines(out / "train.txt") == ["audio/mike.wav| Helo wrold, it is me."]
    (out / "train.txt").write_text("audio/mike.wav| Hello world, it is me.")  # the guide says: check and fix them
    rc, text, _ = run([voice, "--output", out], capsys)
    assert rc == 0 and lines(out / "train.txt") == ["audio/mike.wav| Hello world, it is me."]
    assert "1 lines keep the text they were edited to" in text
    # whisper.json edited after the lists: its text wins
    entry = json.loads((out / "whisper.json").read_text())
    entry["mike.wav"]["text"] = entry["mike.wav"]["segments"][0]["text"] = " Hello world, it's me."
    (out / "whisper.json").write_text(json.dumps(entry))
    later = (out / "train.txt").stat().st_mtime_ns + 10**9
    os.utime(out / "whisper.json", ns=(later, later))
    assert run([voice, "--output", out], capsys)[0] == 0
    assert lines(out / "train.txt") == ["audio/mike.wav| Hello world, it's me."]
    (out / "train.txt").write_text("audio/mike.wav| Hello world, it is me.")
    (out / "whisper.json").unlink()  # the list alone is a transcript too
    assert run([voice, "--output", out], capsys)[0] == 0
    assert lines(out / "train.txt") == ["audio/mike.wav| Hello world, it is me."]


def test_bad_inputs_and_arguments_are_sentences(tmp_path, capsys):
    voice = tmp_path / "v"
    voice.mkdir()
    sf.write(voice / "a.wav", np.zeros(SR, np.float32), SR)               # silent
    sf.write(voice / "b.wav", np.full(SR, 0.2, np.float32), SR)
    (voice / "b.txt").write_bytes(b"caf\xe9")                             # not UTF-8
    (voice / "c.m4a").write_bytes(b"x")
    (voice / "orphan.txt").write_text("no clip")
    rc, out, err = run([voice, "--output", tmp_path / "o1", "model.whisper_path=" + str(tmp_path / "none")], capsys)
    assert rc == 2
    assert_sentence(err, "model.whisper_path", "no such folder")
    (voice / "a.txt").write_text("Silent.")
    rc, out, err = run([voice, "--output", tmp_path / "o2"], capsys)
    assert rc == 2  # nothing usable
    for what in ("a.wav: silent", "b.txt: its transcript is not UTF-8", "c.m4a: .m4a is not an audio format",
                 "orphan.txt: a transcript without a clip"):
        assert what in out, (what, out)
    cases = {("foo=bar",): "the one KEY=VALUE it takes is model.whisper_path=DIR",
             ("--whisper", "x", "model.whisper_path=y"): "name two Whisper folders",
             ("--start-offset", "nan"): "--start-offset nan is not a number"}
    for extra, says in cases.items():
        rc, _, err = run([voice, *extra], capsys)
        assert rc == 2 and says in err, (extra, err)
        assert_sentence(err)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "empty").mkdir()
    for argv, says in (([tmp_path / "missing"], "no such folder"),
                       ([voice, "--output", tmp_path / "afile"], "is a file"),
                       ([voice, "--output", voice], "the voice folder itself"),
                       ([tmp_path / "empty"], "holds no audio")):
        rc, _, err = run(argv, capsys)
        assert rc == 2 and says in err, (argv, err)
    other = tmp_path / "someone"
    other.mkdir()
    (other / "thesis.tex").write_text("x")
    rc, _, err = run([voice, "--output", other], capsys)
    assert rc == 2 and "a folder with other files in it" in err
    (tmp_path / "o3").mkdir()
    (tmp_path / "o3" / "whisper.json").write_text("{not json")
    rc, _, err = run([voice, "--output", tmp_path / "o3"], capsys)
    assert rc == 2 and "whisper.json from an earlier run cannot be read" in err


def test_runs_as_a_module(tmp_path):
    voice = tmp_path / "v"
    voice.mkdir()
    sf.write(voice / "a.wav", np.full(SR, 0.1, np.float32), SR)
    p = subprocess.run([sys.executable, "-m", "audiotrain_tortoise.prepare", str(voice)], capture_output=True,
                       text=True, cwd=tmp_path, timeout=120)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.startswith("audiotrain tortoise-prepare: 1 of 1 clips have no transcript")
    assert_sentence(p.stderr, "--whisper")


# ---- a tiny random Whisper ----------------------------------------------------------------------------------

def _check_results(results: dict, voice: Path) -> None:
    for name, entry in results.items():
        assert set(entry) == {"text", "language", "segments"} and isinstance(entry["text"], str)
        duration = sf.info(voice / name).duration
        assert entry["segments"], name
        for i, seg in enumerate(entry["segments"]):
            assert set(seg) == {"id", "start", "end", "text"} and seg["id"] == i
            assert 0 <= seg["start"] <= seg["end"] <= duration + 1e-6, (name, seg)
        assert entry["text"] == "".join(s["text"] for s in json.loads(
            (voice.parent / "ds" / "whisper.unsanitized.json").read_text())[name]["segments"])


@needs_tools
def test_tiny_whisper_transcribes_every_readable_clip(tmp_path, capsys, tiny_whisper, one_thread):
    voice = make_voice(tmp_path / "v", names=("alpha.wav", "bravo.flac", "delta.mp3", "foxtrot.wav"),
                       transcripts=False)
    write(voice / "long.wav", speech("A long clip of speech for the long form.", 35.0), SR)  # > 30 s: long-form
    rc, out, err = run([voice, "--output", tmp_path / "ds", "--whisper", tiny_whisper,
                        "--validation-text-length", "0", "--validation-audio-length", "0"], capsys)
    assert rc == 0, err
    results = json.loads((tmp_path / "ds" / "whisper.json").read_text())
    assert sorted(results) == ["alpha.wav", "bravo.flac", "delta.mp3", "foxtrot.wav", "long.wav"]
    assert {e["language"] for e in results.values()} == {"en"}
    _check_results(results, voice)
    assert max(s["end"] for s in results["long.wav"]["segments"]) > 30  # the window after the first 30 s
    assert "corrupt.wav: cannot decode audio" in (tmp_path / "ds" / "bad_inputs.txt").read_text()
    assert "6 clips: 5 transcribed with Whisper, 0 transcripts reused, 1 skipped" in out
    train = lines(tmp_path / "ds" / "train.txt")
    assert train and all(line.startswith("audio/") and (tmp_path / "ds" / line.split("|")[0]).is_file()
                         for line in train)
    # detected per clip when --language is empty; a language the model lacks is one sentence
    rc, _, err = run([voice, "--output", tmp_path / "ds", "--whisper", tiny_whisper, "--language", "",
                      "--validation-text-length", "0", "--validation-audio-length", "0"], capsys)
    assert rc == 0, err
    assert {e["language"] for e in json.loads((tmp_path / "ds" / "whisper.json").read_text()).values()} <= \
        set(LANGUAGES)
    rc, _, err = run([voice, "--output", tmp_path / "ds", "--whisper", tiny_whisper, "--language", "klingon"], capsys)
    assert rc == 2
    assert_sentence(err, "--language klingon", "de, en, es, fr, ja")


@needs_tools
def test_skip_existing_reruns_only_new_clips(tmp_path, capsys, tiny_whisper, one_thread, monkeypatch):
    from audiotrain_tortoise.whisper import Transcriber, WhisperError

    calls: list[int] = []
    real = Transcriber.transcribe

    def counted(self, audio):
        calls.append(audio.size)
        if audio.size == 16000 * 2:  # bravo: Whisper fails on it, once
            if len(calls) == 2:
                raise WhisperError("Whisper failed on it (RuntimeError: test)")
        return real(self, audio)

    monkeypatch.setattr(Transcriber, "transcribe", counted)
    voice = make_voice(tmp_path / "v", names=("alpha.wav", "bravo.flac"), transcripts=False, corrupt=False)
    argv = [voice, "--output", tmp_path / "ds", f"model.whisper_path={tiny_whisper}", "--workers", "0",  # counted here
            "--validation-text-length", "0", "--validation-audio-length", "0"]
    rc, out, _ = run(argv, capsys)
    assert len(calls) == 2 and "bravo.flac: Whisper failed on it (RuntimeError: test)" in out
    assert sorted(json.loads((tmp_path / "ds" / "whisper.json").read_text())) == ["alpha.wav"]
    make_voice(voice, names=("delta.mp3",), transcripts=False, corrupt=False)
    calls.clear()
    rc, out, err = run([*argv, "--skip-existing"], capsys)
    assert rc == 0, err
    assert len(calls) == 2  # bravo (failed before) and the new delta; alpha is reused
    assert "3 clips: 2 transcribed with Whisper, 1 transcripts reused (1 from whisper.json)" in out
    assert sorted(json.loads((tmp_path / "ds" / "whisper.json").read_text())) == ["alpha.wav", "bravo.flac",
                                                                                  "delta.mp3"]
    calls.clear()
    assert run([*argv, "--skip-existing"], capsys)[0] == 0 and calls == []
    assert run(argv, capsys)[0] == 0 and len(calls) == 3  # without it, AIVC transcribes every clip again


def test_transcriber_edges(tmp_path, tiny_whisper, one_thread, monkeypatch):
    import shutil

    import torch

    from audiotrain_tortoise import whisper as W

    # an older folder without generation_config.json: what timestamps need comes from the tokenizer's tokens
    folder = tmp_path / "no-generation-config"
    shutil.copytree(tiny_whisper, folder)
    (folder / "generation_config.json").unlink()
    t = W.Transcriber(folder, option="--whisper", language="english")
    assert t.language == "en" and t.multilingual
    entry = t.transcribe(np.zeros(16000 * 2, np.float32) + 0.01 * np.sin(np.arange(32000) / 3.0).astype(np.float32))
    assert set(entry) == {"text", "language", "segments"} and entry["language"] == "en"
    assert all(0 <= s["start"] <= s["end"] <= 2.0 for s in entry["segments"])
    # a failure inside generate costs that clip only, as a WhisperError naming it
    monkeypatch.setattr(t.model, "generate", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(W.WhisperError, match=r"Whisper failed on it \(RuntimeError: boom\)"):
        t.transcribe(np.zeros(16000, np.float32))
    # a generate that keeps seeking to the same place is stopped
    guard = W._progress_guard()
    guard(torch.tensor([[0, 3000]]))
    guard(torch.tensor([[1500, 3000]]))
    guard(torch.tensor([[1500, 3000]]))
    with pytest.raises(W._Stuck):
        guard(torch.tensor([[1500, 3000]]))
    (folder / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(BadFileError) as err:
        W.Transcriber(folder, option="model.whisper_path", language="en")
    assert_sentence(str(err.value), "model.whisper_path=")
