"""``audiotrain generate`` for ACE-Step 1.5, as a user types it: a tiny run trained by the CLI (``debug=smoke``), then
songs from it — the same seed gives the same 48 kHz stereo audio, another seed or the adapter off changes it, bad
inputs are one sentence with exit 2; and the sampler each variant gets (turbo 8 steps, guided base/sft)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiotrain_acestep15.generation import sampler_settings
from tests.cli_runs import run_cli, tiny_trained_run
from tests.conftest import compose


def _run(args, cwd, timeout=600):
    return run_cli(args, cwd, timeout)


@pytest.fixture(scope="module")
def acestep15_run(tmp_path_factory) -> Path:
    """A tiny ACE-Step 1.5 LoRA trained by the CLI for 3 steps at a high learning rate (so the adapter matters)."""
    return tiny_trained_run("acestep15", tmp_path_factory.mktemp("gen_acestep15"))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_turbo_variants_take_8_steps_and_base_sft_take_guidance():
    tiny = compose(["model=acestep15"])
    assert sampler_settings(tiny, {}) == {"sampler": "turbo", "steps": 8, "shift": 3.0}
    assert sampler_settings(tiny, {"steps": 4, "shift": 1.0, "guidance": 3.0}) == {
        "sampler": "turbo", "steps": 4, "shift": 1.0}
    guided = compose(["model=acestep15", "model.sampling.sampler=guided"])
    s = guided.model.sampling
    assert sampler_settings(guided, {}) == {"sampler": "guided", "steps": int(s.steps), "guidance": float(s.guidance),
                                            "shift": float(s.shift), "guidance_mode": str(s.guidance_mode)}
    assert sampler_settings(guided, {"steps": 5, "guidance": 2.5})["steps"] == 5
    assert sampler_settings(guided, {"steps": 5, "guidance": 2.5})["guidance"] == 2.5


@pytest.mark.slow
def test_generate_is_reproducible_48k_stereo_and_seed_and_adapter_matter(acestep15_run, tmp_path):
    song = ["--caption", "a calm piano ballad", "--lyrics", "[verse]\nhello there", "--duration", "1.2",
            "--bpm", "90", "--keyscale", "C major", "--timesignature", "4", "--language", "en"]
    outs = []
    for name, extra in (("a", []), ("b", []), ("base", ["--lora-scale", "0"]), ("seed", ["--seed", "5"]),
                        ("noted", ["--guidance", "5"])):
        p = _run(["generate", acestep15_run, *song, "--out", tmp_path / name, *extra], tmp_path)
        assert p.returncode == 0, p.stderr[-2000:]
        (wav,) = (tmp_path / name).glob("*.wav")
        outs.append((wav, p))
    (a, _), (b, _), (base, _), (seed, _), (noted, pn) = outs
    assert _digest(a) == _digest(b)
    assert _digest(base) != _digest(a) and _digest(seed) != _digest(a)
    assert "--guidance 5 is ignored" in pn.stdout + pn.stderr
    audio, sr = sf.read(a, always_2d=True)
    assert sr == 48000 and audio.shape == (30 * 1920, 2) and np.isfinite(audio).all() and np.abs(audio).max() > 0
    settings = json.loads(a.with_suffix(".json").read_text())
    assert settings["sample_rate"] == 48000 and settings["channels"] == 2
    assert settings["request"]["caption"] == "a calm piano ballad"
    # several prompts in one call: a plain-text line is a caption; lyrics from a file
    (tmp_path / "lyrics.txt").write_text("[chorus]\nla la la", encoding="utf-8")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"caption": "a rock song", "lyrics": f"@{tmp_path / 'lyrics.txt'}",
                                   "duration": 0.8}) + "\n"
                       + json.dumps({"caption": "a jazz trio", "duration": 0.4, "steps": 2}) + "\n", encoding="utf-8")
    p = _run(["generate", acestep15_run, "--prompts", prompts, "--out", tmp_path / "many"], tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    lengths = sorted(sf.info(str(w)).frames for w in (tmp_path / "many").glob("*.wav"))
    assert lengths == [10 * 1920, 20 * 1920]


@pytest.mark.slow
def test_a_guided_run_generates_with_its_steps_and_guidance(tmp_path_factory, tmp_path):
    """base / sft sample with classifier-free guidance: a run of that sampler takes --steps and --guidance, the same
    seed gives the same song, another guidance another one."""
    run = tiny_trained_run("acestep15", tmp_path_factory.mktemp("gen_acestep15_guided"),
                           "model.sampling.sampler=guided")
    song = ["--caption", "a slow waltz", "--duration", "0.8", "--steps", "3"]
    digests = {}
    for name, guidance in (("a", "3"), ("b", "3"), ("weak", "1")):
        p = _run(["generate", run, *song, "--guidance", guidance, "--out", tmp_path / name], tmp_path)
        assert p.returncode == 0, p.stderr[-2000:]
        assert "is ignored" not in p.stdout + p.stderr
        (wav,) = (tmp_path / name).glob("*.wav")
        audio, sr = sf.read(wav, always_2d=True)
        assert sr == 48000 and audio.shape == (20 * 1920, 2) and np.isfinite(audio).all()
        digests[name] = _digest(wav)
    assert digests["a"] == digests["b"] and digests["weak"] != digests["a"]


@pytest.mark.slow
def test_generate_bad_inputs_are_one_sentence_exit_2(acestep15_run, tmp_path):
    cases = {
        ("--duration", "300"): "--duration 300 is longer than the 240 s ACE-Step 1.5 generates",
        ("--duration", "-1"): "--duration -1.0 is not a positive number of seconds",
        ("--caption", " "): "--caption is empty",
        ("--lyrics", "@/no/such/file.txt"): "--lyrics @/no/such/file.txt cannot be read",
        ("--steps", "0"): "--steps 0 is not a whole number of steps >= 1",
        ("--bpm", "-3"): "--bpm -3.0 is not a positive number",
    }
    for args, expect in cases.items():
        p = _run(["generate", acestep15_run, *args, "--out", tmp_path / "x"], tmp_path)
        assert p.returncode == 2, (args, p.stderr[-1500:])
        assert expect in p.stderr and "Traceback" not in p.stderr, (args, p.stderr[-1500:])
    p = _run(["generate", acestep15_run, "--help"], tmp_path)
    assert p.returncode == 0 and all(o in p.stdout for o in ("--caption", "--lyrics", "--steps", "--guidance",
                                                              "--shift", "--bpm", "--keyscale"))
