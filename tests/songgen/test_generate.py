"""SongGen generation: the sampler (pattern, EOS order, determinism, batch = alone), tokens -> audio for single-
and dual-track patterns, and ``audiotrain generate`` on a tiny run trained by the CLI."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiotrain.models.presets import seeded
from audiotrain_songgen import patterns as P
from audiotrain_songgen.codec import tiny_codec
from audiotrain_songgen.composite import SongGenComposite
from audiotrain_songgen.generate import max_frames_for, max_len_for, sample, stack_waves, to_audio
from audiotrain_songgen.presets import resolve_config

K = 8
from tests.cli_runs import run_cli, tiny_trained_run


def _model(pattern: str = "mixed_pro") -> SongGenComposite:
    cfg = resolve_config({"preset": "tiny", "decoder": {"track_pattern": pattern,
                                                        "add_vocal_loss": pattern == "mixed_pro"}})
    return seeded(lambda: SongGenComposite(cfg), 0).eval()


def _memory(model: SongGenComposite, batch: int = 2, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    d = int(model.cfg["text_encoder"]["d_model"])
    lt, ll = 5, 7
    text_mask = torch.ones(batch, lt)
    text_mask[1:, -2:] = 0  # the second prompt is shorter
    lyrics_mask = torch.ones(batch, ll, dtype=torch.bool)
    lyrics_mask[1:, -3:] = False
    return {"text_hidden": torch.randn(batch, lt, d, generator=g), "text_mask": text_mask,
            "lyrics_ids": torch.randint(2, 200, (batch, ll), generator=g), "lyrics_mask": lyrics_mask}


@pytest.mark.parametrize("pattern", ["mixed_pro", "interleaving_A_V", "parallel_std"])
def test_frames_and_positions_are_inverse(pattern):
    for frames in (1, 7, 100):
        assert max_frames_for(max_len_for(frames, K, pattern), K, pattern) == frames
    assert max_frames_for(6547, K, "mixed_pro") == 6538 and max_frames_for(6547, K, "interleaving_A_V") == 3265


def test_sampling_follows_the_delay_pattern_and_ends_streams_in_order():
    model = _model()
    seq = sample(model, **_memory(model), pattern="mixed_pro", max_frames=12, temperature=1.0,
                 generator=torch.Generator().manual_seed(0), min_new_tokens=0)
    assert seq.shape[:2] == (2, K) and seq.shape[-1] <= max_len_for(12, K, "mixed_pro")
    mask = P.pattern_mask(2, K, seq.shape[-1], "mixed_pro")
    forced = mask != P.FREE
    assert torch.equal(seq[forced], mask[forced])  # BOS at the delay's start, EOS in the tail
    assert (seq[:, :, 0] == P.BOS).all()
    for b in range(2):
        # after a stream's EOS only PAD; stream k never ends before stream k-1
        ends = []
        for k in range(K):
            where = (seq[b, k] == P.EOS).nonzero()
            assert len(where) >= 1, "every stream ended (the tail forces EOS at the latest)"
            first = int(where[0])
            assert (seq[b, k, first + 1:] == P.PAD).all()
            ends.append(first)
        assert ends == sorted(ends)


def test_eos_is_held_back_for_min_new_tokens():
    model = _model()
    head = model.decoder.lm_heads[0]
    bias = torch.zeros(head.weight.shape[0])
    bias[P.EOS] = 50.0  # stream 0 always wants EOS
    head.bias = torch.nn.Parameter(bias)
    seq = sample(model, **_memory(model, 1), pattern="mixed_pro", max_frames=30, temperature=1.0,
                 generator=torch.Generator().manual_seed(0))
    first = int((seq[0, 0] == P.EOS).nonzero()[0])
    assert first == K + 2  # forbidden for the first K + 1 steps, taken at once after


def test_same_generator_same_tokens_and_each_sample_draws_what_it_draws_alone():
    model = _model()
    mem = _memory(model)
    gens = lambda: [torch.Generator().manual_seed(10 + i) for i in range(2)]  # noqa: E731
    a = sample(model, **mem, pattern="mixed_pro", max_frames=10, generator=gens())
    b = sample(model, **mem, pattern="mixed_pro", max_frames=10, generator=gens())
    assert torch.equal(a, b)
    alone = sample(model, **{k: v[1:] for k, v in mem.items()}, pattern="mixed_pro", max_frames=10,
                   generator=[torch.Generator().manual_seed(11)])
    n = alone.shape[-1]
    assert torch.equal(a[1, :, :n], alone[0]) and (a[1, :, n:] == P.PAD).all()
    other = sample(model, **mem, pattern="mixed_pro", max_frames=10,
                   generator=[torch.Generator().manual_seed(99 + i) for i in range(2)])
    assert not torch.equal(a, other)
    greedy = [sample(model, **mem, pattern="mixed_pro", max_frames=10, temperature=0) for _ in range(2)]
    assert torch.equal(*greedy)


def test_a_reference_voice_becomes_the_memorys_first_part():
    from audiotrain_songgen import mert as M, voice as V
    from audiotrain_songgen.plugin import PLUGIN

    model = _model()
    encoders = {"voice": V.VoiceFeature(M.MertEncoder.tiny(0), 1)}
    t = np.arange(72000) / 24000
    clip = (0.3 * np.sin(2 * np.pi * 220 * t))[None].astype(np.float32)
    cond = PLUGIN.voice_conditions(encoders, clip, torch.device("cpu"))
    want = encoders["voice"].encode({"audio": torch.from_numpy(clip), "audio_length": 72000, "key": "generate"})
    assert torch.equal(cond["mert_hidden"][0], want["mert_hidden"][0].float()) and cond["voice_mask"].all()
    mem = _memory(model, 1)
    plain, _ = model.memory(**mem)
    voiced, vmask = model.memory(**mem, **cond)
    frames = cond["mert_hidden"].shape[1]
    assert voiced.shape[1] == plain.shape[1] + frames and vmask[0, :frames].all()
    assert torch.equal(voiced[:, frames:], plain)  # the description and lyrics parts are unchanged
    silent = PLUGIN.voice_conditions(encoders, np.zeros_like(clip), torch.device("cpu"))
    assert not silent["voice_mask"].any()  # a silent reference is never attended to
    assert PLUGIN.voice_conditions(encoders, None, torch.device("cpu")) == {}


@pytest.mark.parametrize("pattern", ["interleaving_A_V", "parallel_V_A"])
def test_dual_track_generation_decodes_both_tracks_and_their_mix(pattern):
    model = _model(pattern)
    seq = sample(model, **_memory(model, 1), pattern=pattern, max_frames=9, generator=torch.Generator().manual_seed(3),
                 min_new_tokens=0)
    assert seq.shape[1] == P.streams(pattern, K)
    codec = tiny_codec(0)
    waves = to_audio(seq[0], pattern, codec)
    assert set(waves) == {"acc", "vocal", "mix"}
    n = waves["mix"].shape[-1]
    assert waves["acc"].shape == waves["vocal"].shape == (1, n) and n % 320 == 0 and n > 0
    assert torch.equal(waves["mix"], waves["acc"] + waves["vocal"])


def test_tokens_to_audio_is_the_codec_decoding_of_the_valid_frames():
    from audiotrain_songgen.codec import decode

    codec = tiny_codec(0)
    codes = torch.randint(0, 1024, (K, 6), generator=torch.Generator().manual_seed(0))
    labels = P.delay(codes)  # the training layout: [K, 6 + K]
    wave = to_audio(labels, "mixed_pro", codec, has_start=False)["mix"]
    assert wave.shape == (1, 6 * 320)
    assert torch.equal(wave, decode(codec, codes[None])[0])
    empty = torch.full((K, 3), P.EOS)
    assert to_audio(empty, "mixed_pro", codec, has_start=False)["mix"].abs().sum() == 0  # silence, with a note
    stacked = stack_waves([torch.ones(1, 4), torch.ones(1, 2)])
    assert stacked.shape == (2, 1, 4) and stacked[1, 0, 2:].abs().sum() == 0


# --- audiotrain generate, as a user types it -------------------------------------------------------------

def _run(args, cwd, timeout=300):
    return run_cli(args, cwd, timeout)


@pytest.fixture(scope="module")
def songgen_run(tmp_path_factory) -> Path:
    """A tiny SongGen LoRA trained by the CLI for 3 steps at a high learning rate (so the adapter matters)."""
    return tiny_trained_run("songgen", tmp_path_factory.mktemp("gen_songgen"))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_generate_from_a_run_is_reproducible_16k_mono_and_the_adapter_matters(songgen_run, tmp_path):
    song = ["--description", "a calm piano ballad", "--lyrics", "[verse] hello there", "--duration", "1"]
    outs = []
    vocal = next((songgen_run.parents[3] / "songs").glob("*_vocal.wav"))
    for name, extra in (("a", []), ("b", []), ("base", ["--lora-scale", "0"]), ("seed", ["--seed", "5"]),
                        ("voice", ["--voice", vocal])):
        p = _run(["generate", songgen_run, *song, "--out", tmp_path / name, *extra], tmp_path)
        assert p.returncode == 0, p.stderr[-2000:]
        (wav,) = (tmp_path / name).glob("*.wav")
        outs.append(wav)
    a, b, base, seed, voiced = outs
    assert _digest(a) == _digest(b)
    assert json.loads(voiced.with_suffix(".json").read_text())["request"]["voice"] == str(vocal)
    audio, sr = sf.read(a, always_2d=True)
    assert sr == 16000 and audio.shape[1] == 1 and 0 < audio.shape[0] <= 16000 and np.isfinite(audio).all()
    assert _digest(base) != _digest(a) and _digest(seed) != _digest(a)
    settings = json.loads(a.with_suffix(".json").read_text())
    assert settings["sample_rate"] == 16000 and settings["lora_scale"] == 1.0
    # several prompts in one call, lyrics from a file
    (tmp_path / "lyrics.txt").write_text("[chorus] la la la", encoding="utf-8")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"description": "a rock song", "lyrics": f"@{tmp_path / 'lyrics.txt'}"}) + "\n"
                       + json.dumps({"description": "a jazz trio", "duration": 0.5}) + "\n", encoding="utf-8")
    p = _run(["generate", songgen_run, "--prompts", prompts, "--out", tmp_path / "many"], tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert len(list((tmp_path / "many").glob("*.wav"))) == 2


@pytest.mark.slow
def test_generate_bad_inputs_are_one_sentence_exit_2(songgen_run, tmp_path):
    cases = {
        ("--duration", "100"): "--duration 100 is longer than the 30 s this model may generate",
        ("--duration", "-1"): "--duration -1.0 is not a positive number of seconds",
        ("--description", " "): "--description is empty",
        ("--lyrics", "@/no/such/file.txt"): "--lyrics @/no/such/file.txt cannot be read",
        ("--temperature", "-2"): "--temperature -2.0 is not a number >= 0",
    }
    for args, expect in cases.items():
        p = _run(["generate", songgen_run, *args, "--out", tmp_path / "x"], tmp_path)
        assert p.returncode == 2, (args, p.stderr[-1500:])
        assert expect in p.stderr and "Traceback" not in p.stderr, (args, p.stderr[-1500:])
    p = _run(["generate", songgen_run, "--help"], tmp_path)
    assert p.returncode == 0 and "--description" in p.stdout and "--lyrics" in p.stdout


def test_dual_track_samples_are_the_mix_with_its_stems_beside_it(tmp_path):
    from audiotrain.plugins import registry
    from audiotrain.tracking.samples import track_stem, tracks

    plugin = registry.get("songgen")
    cfg = compose_cfg(["model.track_pattern=interleaving_A_V", "model.max_new_frames=6"])
    backbone = plugin.build_backbone(cfg).eval()
    waves, sr = backbone.sample_audio(_memory(backbone.model, 1), seed=0)
    assert sr == 16000 and list(waves) == ["mix", "acc", "vocal"]
    assert waves["mix"].shape == waves["acc"].shape == waves["vocal"].shape and waves["mix"].shape[:2] == (1, 1)
    assert torch.equal(waves["mix"], waves["acc"] + waves["vocal"])
    named = tracks(waves)
    assert list(named) == ["", "acc", "vocal"] and named[""] is waves["mix"]
    assert [track_stem(tmp_path / "pred_0_song", t).name for t in named] == ["pred_0_song", "pred_0_song_acc",
                                                                             "pred_0_song_vocal"]
    single = plugin.build_backbone(compose_cfg(["model.max_new_frames=6"])).eval()
    mono, _ = single.sample_audio(_memory(single.model, 1), seed=0)
    assert isinstance(mono, torch.Tensor) and mono.shape[:2] == (1, 1) and list(tracks(mono)) == [""]


def compose_cfg(extra):
    from tests.conftest import compose

    return compose(["model=songgen", "tracking=none", *extra])


@pytest.mark.slow
def test_merge_writes_a_songgen_folder_that_loads_strictly_and_trains(songgen_run, tmp_path):
    import torch

    from audiotrain_songgen.checkpoint import load_folder

    out = songgen_run / "merged"
    p = _run(["merge", songgen_run, "--out", out], tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert sorted(f.name for f in out.iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_folder(out)  # strict: no missing or unexpected key
    assert not any("lora_" in k for k in loaded.model.state_dict())
    # the merged weights differ from the untouched base (the adapter is in them) and generate from the folder
    p = _run(["generate", out, "--description", "a song", "--duration", "0.4", "--out", tmp_path / "g"], tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert len(list((tmp_path / "g").glob("*.wav"))) == 1
