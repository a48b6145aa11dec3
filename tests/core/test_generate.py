"""``audiotrain generate SOURCE``, as a user types it (subprocesses), on a tiny ACE-Step run trained by the CLI."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from audiotrain.cli.generate import read_prompts, slug
from audiotrain.errors import UserError

AUDIOTRAIN = [sys.executable, "-m", "audiotrain.cli.main"]
SONG = ["--tags", "rock, electric guitar", "--duration", "2", "--steps", "4", "--guidance", "3"]


def run(args, cwd, timeout=300):
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", AUDIOTRAIN_CACHE=str(Path(cwd) / "cache"))
    return subprocess.run(AUDIOTRAIN + [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def acestep_run(tmp_path_factory) -> Path:
    """A tiny ACE-Step LoRA run trained by the CLI (debug=smoke, 4 steps): its run directory."""
    from audiotrain.plugins import registry

    work = tmp_path_factory.mktemp("gen_acestep")
    data = registry.get("acestep").example_data(work / "songs", 2)
    p = run(["model=acestep", f"data={data}", "debug=smoke", "trainer.max_steps=4", "trainer.every_plot_step=0"], work)
    assert p.returncode == 0, p.stderr[-3000:]
    (run_dir,) = [d for d in (work / "exps" / "logs").glob("*/*") if (d / "summary.json").is_file()]
    assert (run_dir / "adapters" / "final" / "peft" / "adapter_model.safetensors").is_file()
    return run_dir


@pytest.mark.slow  # a 4-step training run, then three renders: ~60 s
def test_same_seed_gives_the_same_wav_48k_stereo_and_lora_scale_changes_it(acestep_run, tmp_path):
    import soundfile as sf

    outs = {}
    for name, extra in (("a", []), ("b", []), ("base", ["--lora-scale", "0"])):
        p = run(["generate", acestep_run, *SONG, "--seed", "1", "--out", tmp_path / name, *extra], tmp_path)
        assert p.returncode == 0, p.stderr[-3000:]
        assert "Traceback" not in p.stderr and "4/4" in p.stderr  # the step bar reached the end
        outs[name] = tmp_path / name / "0_rock_electric_guitar.wav"
    assert digest(outs["a"]) == digest(outs["b"])
    assert digest(outs["a"]) != digest(outs["base"])
    info = sf.info(str(outs["a"]))
    assert (info.samplerate, info.channels, info.frames) == (48000, 2, 96000)
    png = outs["a"].with_suffix(".png")
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    meta = json.loads(outs["a"].with_suffix(".json").read_text())
    assert meta["seed"] == 1 and meta["lora_scale"] == 1.0 and meta["request"]["tags"] == "rock, electric guitar"
    wav, _ = sf.read(str(outs["a"]))
    assert abs(wav).max() > 0.01  # not silence (the tiny model is untrained noise, not music)


@pytest.mark.slow  # builds the tiny model three times in process: ~25 s
def test_lora_scale_zero_is_the_base_model_and_merged_weights_equal_the_adapter(acestep_run, tmp_path):
    import torch

    from audiotrain.cli.adapters import merge
    from audiotrain.cli.generate_source import find_source, load_model

    request = {"tags": "rock", "lyrics": "", "duration": 1.0, "steps": 3, "guidance": 3.0}

    def render(path, scale, adapter=True):
        src = find_source(path)
        if not adapter:
            src.adapter = None
        model = load_model(src, scale)
        audio, sr = src.plugin.generate(model, src.cfg, request, 5)
        assert sr == 48000 and audio.shape == (2, 48000)
        return audio

    base = render(acestep_run, 1.0, adapter=False)
    assert torch.equal(render(acestep_run, 0.0), base)
    tuned = render(acestep_run, 1.0)
    assert not torch.equal(tuned, base)
    assert merge([str(acestep_run), "--out", str(acestep_run / "merged")]) == 0
    merged = render(acestep_run / "merged", 1.0)
    # W + s·BA folded into one matrix rounds differently from W x + s·B(A x): equal to float32 precision, not bits
    assert (merged - tuned).abs().max() < 1e-4 * tuned.abs().max(), (merged - tuned).abs().max()


@pytest.mark.slow  # two prompts in one call, an exported adapter folder: ~20 s
def test_prompts_file_gives_one_wav_per_line_from_an_exported_adapter(acestep_run, tmp_path):
    assert run(["export", acestep_run, "--out", tmp_path / "exported"], tmp_path).returncode == 0
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("jazz, saxophone\n\nlofi, hip hop beats\n", encoding="utf-8")
    p = run(["generate", tmp_path / "exported", "--prompts", prompts, "--duration", "1", "--steps", "2",
             "--out", tmp_path / "out"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    wavs = sorted(x.name for x in (tmp_path / "out").glob("*.wav"))
    assert wavs == ["0_jazz_saxophone.wav", "1_lofi_hip_hop_beats.wav"]
    assert digest(tmp_path / "out" / wavs[0]) != digest(tmp_path / "out" / wavs[1])
    assert "Wrote 2 wav file(s)" in p.stdout


@pytest.mark.slow  # uses the trained run
def test_help_lists_the_plugin_options_and_bad_inputs_are_one_sentence(acestep_run, tmp_path):
    p = run(["generate", acestep_run, "--help"], tmp_path)
    assert p.returncode == 0
    for option in ("--tags", "--lyrics", "--duration", "--steps", "--guidance", "--seed", "--lora-scale", "--prompts"):
        assert option in p.stdout
    p = run(["generate", acestep_run, "--duration", "0"], tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip() == ("audiotrain generate: --duration 0.0 is not between 0.5 and 240 seconds: "
                                "pass e.g. --duration 30.")
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"tags": "a"}\n{"tempo": 3}\n', encoding="utf-8")
    p = run(["generate", acestep_run, "--prompts", jsonl], tmp_path)
    assert p.returncode == 2 and "line 2 has the unknown key 'tempo'" in p.stderr and "Traceback" not in p.stderr


def test_a_missing_source_is_one_sentence_exit_2(tmp_path):
    p = run(["generate", tmp_path / "nope", "--tags", "x"], tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert f"SOURCE {tmp_path / 'nope'} does not exist" in p.stderr
    (tmp_path / "empty").mkdir()
    p = run(["generate", tmp_path / "empty"], tmp_path)
    assert p.returncode == 2 and "says neither which model it is for" in p.stderr
    p = run(["generate", "--help"], tmp_path)
    assert p.returncode == 0 and "--lora-scale" in p.stdout and "SOURCE --help" in p.stdout


def test_prompts_files_text_and_jsonl(tmp_path):
    text = tmp_path / "p.txt"
    text.write_text("first one\n\n  second  \n", encoding="utf-8")
    assert read_prompts(text, "tags", {"tags", "steps"}) == [{"tags": "first one"}, {"tags": "second"}]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"tags": "x", "seed": 4}\n[1]\n', encoding="utf-8")
    with pytest.raises(UserError, match="line 2 is a list, not an object"):
        read_prompts(jsonl, "tags", {"tags"})
    (tmp_path / "e.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(UserError, match="holds no prompts"):
        read_prompts(tmp_path / "e.txt", "tags", {"tags"})
    assert slug("Rock, Electric Guitar!") == "rock_electric_guitar" and slug("") == "audio"


def test_a_plugin_without_the_hooks_is_told_so(monkeypatch):
    import audiotrain.cli.generate_source as gs
    from audiotrain.cli.generate import _parse
    from audiotrain.plugins.base import Plugin

    class Silent(Plugin):
        name = "silent"
        config_options = example_data = readers = build_encoders = build_backbone = collate = lambda *a, **k: None

    monkeypatch.setattr(gs, "find_source", lambda path, step="final": gs.Source(Path(path), None, Silent(), None))
    with pytest.raises(UserError, match="The silent plugin cannot generate audio"):
        _parse(["somewhere"])


# ---- VALL-E -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def valle_run(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny VALL-E LoRA run trained by the CLI (4 steps) and one of its voice clips."""
    from audiotrain.plugins import registry

    work = tmp_path_factory.mktemp("gen_valle")
    data = registry.get("valle").example_data(work / "voices", 4)
    p = run(["model=valle", f"data={data}", "debug=smoke", "trainer.max_steps=4", "trainer.every_plot_step=0"], work)
    assert p.returncode == 0, p.stderr[-3000:]
    (run_dir,) = [d for d in (work / "exps" / "logs").glob("*/*") if (d / "summary.json").is_file()]
    clip = sorted(Path(data).rglob("*.wav"))[0]
    return run_dir, clip


@pytest.mark.slow  # a 4-step training run, two renders as subprocesses: ~90 s on a busy machine
def test_valle_speaks_the_same_wav_for_the_same_seed_24k_mono(valle_run, tmp_path):
    import soundfile as sf

    run_dir, clip = valle_run
    wavs = []
    for name in ("a", "b"):
        p = run(["generate", run_dir, "--text", "hello", "--reference", clip, "--max-seconds", "0.5", "--seed", "1",
                 "--out", tmp_path / name], tmp_path)
        assert p.returncode == 0, p.stderr[-3000:]
        wavs.append(tmp_path / name / "0_hello.wav")
    assert digest(wavs[0]) == digest(wavs[1])
    info = sf.info(str(wavs[0]))
    assert (info.samplerate, info.channels) == (24000, 1) and 0 < info.frames <= 12000 + 320
    assert wavs[0].with_suffix(".png").is_file()
    meta = json.loads(wavs[0].with_suffix(".json").read_text())
    assert meta["request"]["reference"] == str(clip) and meta["model"] == "valle"


@pytest.mark.slow  # uses the trained run; in process: ~20 s
def test_valle_lora_scale_zero_is_the_base_model(valle_run):
    import torch

    from audiotrain.cli.generate_source import find_source, load_model

    run_dir, clip = valle_run
    request = {"text": "hello", "reference": str(clip), "prompt_seconds": 1.0, "max_seconds": 0.3,
               "ar_temperature": 0.0, "nar_temperature": 0.0}  # greedy: every step's choice is the model's own

    def render(scale, adapter=True):
        src = find_source(run_dir)
        if not adapter:
            src.adapter = None
        audio, sr = src.plugin.generate(load_model(src, scale), src.cfg, request, 3)
        assert sr == 24000 and audio.shape[0] == 1
        return audio

    assert torch.equal(render(0.0), render(1.0, adapter=False))


@pytest.mark.slow  # uses the trained run
def test_valle_bad_reference_clip_is_one_sentence_exit_2(valle_run, tmp_path):
    run_dir, _ = valle_run
    bad = tmp_path / "voice.wav"
    bad.write_bytes(b"RIFF\x00\x00not really a wav")
    p = run(["generate", run_dir, "--text", "hi", "--reference", bad], tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.startswith(f"audiotrain generate: --reference {bad} is not a usable voice clip")
    assert len(p.stderr.strip().splitlines()) == 1
    p = run(["generate", run_dir, "--text", "hi"], tmp_path)
    assert p.returncode == 2 and "--reference is missing" in p.stderr
    p = run(["generate", run_dir, "--help"], tmp_path)
    assert p.returncode == 0 and "--reference WAV" in p.stdout and "--text" in p.stdout and "--tags" not in p.stdout
