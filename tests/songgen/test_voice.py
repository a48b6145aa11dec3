"""SongGen's reference voice: MERT-v1 built as a HuBERT (tiny, or a local folder loaded strictly), its input rule
(Wav2Vec2FeatureExtractor's normalisation), the per-song crops cached from the vocal stem, the voice drop each
training step draws through the core's choose_variant rng, and the collated voice / its mask. All offline."""
from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from audiotrain.errors import UserError
from audiotrain.plugins import registry
from audiotrain_songgen import mert as M
from audiotrain_songgen import voice as V
from audiotrain_songgen.example_data import write_song, write_song_folder
from tests.conftest import NO_SIGNAL_HANDLERS, compose

ROOT = Path(__file__).resolve().parents[2]


# ---- MERT ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    return M.MertEncoder.tiny(0)


def test_tiny_mert_gives_25_states_of_224_frames_for_3_s(tiny):
    x = M.normalise(torch.randn(M.CROP_SAMPLES, generator=torch.Generator().manual_seed(0)))
    states = tiny.states(x[None])
    # HuBERT's conv stack (receptive field 400, hop 320, no padding): floor((72000 - 400) / 320) + 1 = 224 at 75 Hz
    assert states.shape == (1, 224, 25, 16) and states.dtype == torch.float32
    assert tiny.num_states == 25 and tiny.frames() == 224 == M.frames_for(72000)
    assert M.frames_for(24000 * 10) == 749  # 75 frames a second
    again = M.MertEncoder.tiny(0).states(x[None])
    assert torch.equal(states, again)  # seeded: the same model every time
    assert not torch.equal(states, M.MertEncoder.tiny(1).states(x[None]))
    assert (states[0, :, 0] - states[0, :, 24]).abs().max() > 1e-3  # 25 distinct states, not one repeated


def test_tiny_mert_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    M.MertEncoder.tiny(0)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("seconds", [3.0, 2.0, 0.5])
def test_normalisation_equals_the_wav2vec2_feature_extractor(seconds):
    from transformers import Wav2Vec2FeatureExtractor

    rng = np.random.default_rng(int(seconds * 10))
    wave = (0.2 * rng.standard_normal(int(seconds * 24000)) + 0.03).astype(np.float32)
    # MERT-v1's preprocessor_config: do_normalize, padding value 0, right padding, return_attention_mask
    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=24000, padding_value=0.0, do_normalize=True,
                                  return_attention_mask=True)
    want = fe(wave, sampling_rate=24000, padding="max_length", max_length=72000, return_tensors="np")["input_values"][0]
    got = M.normalise(torch.from_numpy(wave)).numpy()
    assert got.shape == (72000,) and np.abs(got - want).max() < 1e-5
    assert np.all(got[len(wave):] == 0)  # zero-padded to exactly 3 s
    assert abs(float(got[: len(wave)].mean())) < 1e-5 and abs(float(got[: len(wave)].std()) - 1) < 1e-4
    assert np.all(M.normalise(torch.zeros(72000)).numpy() == 0)  # an all-zero crop stays zeros


# ---- a MERT folder written by the test -----------------------------------------------------------------------
#: config.json in MERT's field names (as m-a-p/MERT-v1-330M writes it, at a tiny size)
MERT_CONFIG = {
    "model_type": "mert_model", "architectures": ["MERTModel"],
    "auto_map": {"AutoConfig": "configuration_MERT.MERTConfig", "AutoModel": "modeling_MERT.MERTModel"},
    "hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 32,
    "hidden_act": "gelu", "layer_norm_eps": 1e-5, "feat_extract_norm": "layer", "feat_extract_activation": "gelu",
    "conv_dim": [8] * 7, "conv_stride": [5, 2, 2, 2, 2, 2, 2], "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_bias": True, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4,
    "do_stable_layer_norm": True, "feat_proj_layer_norm": True, "feature_extractor_cqt": False,
    "feature_extractor_cqt_bins": 336, "deepnorm": False, "attention_relax": -1.0, "sample_rate": 24000,
    "mask_time_prob": 0.05, "hidden_dropout": 0.1, "layerdrop": 0.1, "vocab_size": 32, "torch_dtype": "float32",
}


def reference_hubert():
    """The HubertModel a MERT folder is saved from (masked_spec_embed included, as MERT's own checkpoint has)."""
    from transformers import HubertConfig, HubertModel

    fields = {k: MERT_CONFIG[k] for k in M.MERT_FIELDS if k in MERT_CONFIG}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        model = HubertModel(HubertConfig(**fields, mask_time_prob=0.05)).eval()
    return model


def write_mert(folder: Path, model, *, config=None, old_weight_norm=False, drop=(), extra=None, pickle=False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config or MERT_CONFIG))
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items() if k not in drop}
    if old_weight_norm:  # a transformers 4.x save: nn.utils.weight_norm's names
        state = {k.replace("parametrizations.weight.original0", "weight_g")
                  .replace("parametrizations.weight.original1", "weight_v"): v for k, v in state.items()}
    state.update(extra or {})
    if pickle:
        torch.save(state, folder / "pytorch_model.bin")
    else:
        save_file(state, str(folder / "model.safetensors"))
    return folder


def expected_states(model, x):
    with torch.no_grad():
        out = model(x, output_hidden_states=True)
    return torch.stack([*out.hidden_states[:-1], out.last_hidden_state], dim=2)


@pytest.mark.parametrize("layout", ["safetensors", "old weight-norm names", "pytorch_model.bin"])
def test_a_mert_folder_loads_strictly_and_gives_its_huberts_outputs(tmp_path, layout):
    ref = reference_hubert()
    folder = write_mert(tmp_path / "mert", ref, old_weight_norm=layout == "old weight-norm names",
                        pickle=layout == "pytorch_model.bin")
    enc = M.MertEncoder.from_dir(folder)
    assert enc.num_states == 4 and enc.hidden_size == 16 and not enc.model.training
    assert not hasattr(enc.model, "masked_spec_embed")  # SpecAugment's training-only vector is not used
    g = torch.Generator().manual_seed(1)
    x = torch.stack([M.normalise(torch.randn(72000, generator=g)), M.normalise(torch.randn(50000, generator=g))])
    got = enc.states(x)
    want = expected_states(ref, x)
    assert got.shape == (2, 224, 4, 16)
    assert torch.equal(got, want)
    # the last state is after the final LayerNorm of the pre-norm blocks (transformers 4.43's hidden_states[-1])
    with torch.no_grad():
        last = ref.encoder.layers[-1](got[:, :, -2])
        last = ref.encoder.layer_norm(last[0] if isinstance(last, tuple) else last)
    assert torch.allclose(got[:, :, -1], last, atol=1e-5)
    assert enc.cache_key() == M.mert_dir_key(folder)


def _one_sentence(exc: BaseException) -> str:
    text = str(exc)
    assert isinstance(exc, UserError) and "\n" not in text and text.endswith("."), text
    assert "model.mert_path=" in text
    return text


@pytest.mark.parametrize("case", ["missing", "unexpected", "shape"])
def test_weights_that_do_not_fit_are_one_sentence_naming_the_keys(tmp_path, case):
    ref = reference_hubert()
    key = "encoder.layers.0.attention.k_proj.weight"
    if case == "missing":
        folder = write_mert(tmp_path / "m", ref, drop=(key,))
    elif case == "unexpected":
        extra = {"encoder.layers.9.attention.k_proj.weight": torch.zeros(16, 16)}
        folder = write_mert(tmp_path / "m", ref, extra=extra)
    else:
        folder = write_mert(tmp_path / "m", ref, extra={key: torch.zeros(8, 16)})
    with pytest.raises(UserError) as info:
        M.MertEncoder.from_dir(folder)
    text = _one_sentence(info.value)
    shown = {"missing": "1 missing keys (e.g. encoder.layers.0.attention.k_proj.weight)",
             "unexpected": "1 unexpected keys (e.g. encoder.layers.9.attention.k_proj.weight)",
             "shape": "1 shape mismatches"}[case]
    assert shown in text, text


@pytest.mark.parametrize("change, words", [
    ({"feature_extractor_cqt": True}, "sets feature_extractor_cqt: true in config.json (MERT's CQT input branch)"),
    ({"deepnorm": True}, "sets deepnorm: true"),
    ({"sample_rate": 16000}, "is a MERT for 16000 Hz audio"),
    ({"model_type": "wav2vec2"}, "holds a wav2vec2 model"),
    ({"conv_dim": [8] * 6}, "does not describe a HuBERT"),
])
def test_a_config_hubert_cannot_express_is_one_sentence(tmp_path, change, words):
    folder = write_mert(tmp_path / "m", reference_hubert(), config={**MERT_CONFIG, **change})
    with pytest.raises(UserError) as info:
        M.MertEncoder.from_dir(folder)
    assert words in _one_sentence(info.value)
    with pytest.raises(UserError):  # the cache key (read before any model is built) refuses it too
        M.mert_dir_key(folder)


def test_the_cli_says_the_sentence_without_a_traceback(songs, tmp_path):
    folder = write_mert(tmp_path / "m", reference_hubert(), config={**MERT_CONFIG, "feature_extractor_cqt": True})
    cmd = [sys.executable, "-m", "audiotrain.cli.main", "model=songgen", f"data={songs}", f"model.mert_path={folder}",
           "tracking=none", f"paths.log_dir={tmp_path / 'logs'}", f"cache_dir={tmp_path / 'cache'}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "Traceback" not in text, text[-3000:]
    assert f"model.mert_path={folder} sets feature_extractor_cqt: true in config.json (MERT's CQT input branch)" \
        in " ".join(text.split())


def test_cache_keys_are_the_same_in_a_fresh_interpreter(tmp_path):
    folder = write_mert(tmp_path / "m", reference_hubert())
    here = [M.tiny_mert_key(0), M.mert_dir_key(folder), V.VoiceFeature.feature_key(M.tiny_mert_key(0), 2)]
    script = ("import json, sys; from audiotrain_songgen import mert as M, voice as V; "
              "print(json.dumps([M.tiny_mert_key(0), M.mert_dir_key(sys.argv[1]), "
              "V.VoiceFeature.feature_key(M.tiny_mert_key(0), 2)]))")
    out = subprocess.run([sys.executable, "-c", script, str(folder)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == here
    assert len(set(here)) == 3 and V.VoiceFeature.feature_key(here[0], 3) != here[2]  # the crop count is in it


# ---- crops -----------------------------------------------------------------------------------------------------
def test_crop_starts_follow_the_song_key():
    n = 24000 * 15
    starts = V.crop_starts("song_01", n, 2)
    assert starts == V.crop_starts("song_01", n, 2) and starts != V.crop_starts("song_02", n, 2)
    assert starts[0] != starts[1] and all(0 <= s <= n - 72000 for s in starts)
    assert V.crop_starts("song_01", n, 3)[:2] == starts  # crop i depends on the key and i only
    assert V.crop_starts("song_01", 50000, 2) == [0, 0]  # shorter than 3 s: the whole song
    spread = [V.crop_starts(f"k{i}", n, 1)[0] for i in range(400)]
    assert min(spread) < 0.1 * (n - 72000) and max(spread) > 0.9 * (n - 72000)  # uniform over the song


def test_voice_feature_caches_the_mert_states_of_each_crop(tiny):
    g = torch.Generator().manual_seed(3)
    n = 24000 * 10
    audio = 0.1 * torch.randn(1, n, generator=g)
    half = n // 2
    audio[:, half:] = 0  # the second half of the stem is silent (an instrumental passage)

    def kinds(key):
        return sorted("voiced" if s <= half - 72000 else "silent" if s >= half else "both"
                      for s in V.crop_starts(key, n, 2))

    key = next(f"k{i}" for i in range(500) if kinds(f"k{i}") == ["silent", "voiced"])
    feat = V.VoiceFeature(tiny, 2)
    out = feat.encode({"audio": audio, "audio_length": n, "key": key})
    assert out["mert_hidden"].shape == (2, 224, 25, 16) and out["mert_hidden"].dtype == torch.float16
    starts = V.crop_starts(key, n, 2)
    voiced = [s <= half - 72000 for s in starts]
    assert out["mert_voiced"].tolist() == voiced
    for i, s in enumerate(starts):
        if voiced[i]:
            want = tiny.states(M.normalise(audio[0, s: s + 72000])[None])[0].half()
            assert torch.equal(out["mert_hidden"][i], want)
        else:
            assert not out["mert_hidden"][i].any()  # a silent crop: zeros, never attended to
    again = feat.encode({"audio": audio, "audio_length": n, "key": key})
    assert all(torch.equal(out[k], again[k]) for k in out)
    # a stem shorter than 3 s: the whole of it, zero-padded to 72,000 samples
    short = 0.1 * torch.randn(1, 48000 + 500, generator=g)
    got = feat.encode({"audio": short, "audio_length": 48000, "key": "short"})
    assert got["mert_voiced"].tolist() == [True, True]
    assert torch.equal(got["mert_hidden"][0], tiny.states(M.normalise(short[0, :48000])[None])[0].half())


# ---- training: the dataset, the voice choice, the collate ----------------------------------------------------
@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> Path:
    folder = write_song_folder(tmp_path_factory.mktemp("voice_songs"), count=2, seconds=4.0)
    write_song(folder, "nostems", 4.0, seed=9)
    for stem in folder.glob("nostems_*.wav"):
        stem.unlink()
    return folder


def _cfg(data: Path, root: Path, *extra: str):
    return compose(["model=songgen", f"data={data}", "model.preset=tiny", "tracking=none", "dataset.num_workers=0",
                    "trainer.accelerator=cpu", "trainer.progress_bar=false", "trainer.every_plot_step=0",
                    NO_SIGNAL_HANDLERS, f"cache_dir={root / 'cache'}", f"paths.log_dir={root / 'logs'}", *extra])


def _module(data: Path, root: Path, *extra: str):
    from audiotrain.train.data_setup import load_data
    from audiotrain.train.model_setup import build_model
    from audiotrain.train.module import TrainModule

    plugin = registry.get("songgen")
    cfg = _cfg(data, root, *extra)
    loaded = load_data(cfg, plugin, root / "run", "cpu", save_report=False)
    model = build_model(cfg, plugin, report=False)
    module = TrainModule(model.backbone, plugin, cfg, loaded.encoders, None, adapter_only=model.adapter_only)
    module.dataset = loaded.train
    return module, loaded.train


def _index(ds, name: str) -> int:
    return next(i for i, it in enumerate(ds.items) if it.row["key"].endswith(name))


def test_the_voice_stream_is_the_vocal_stem_at_24_khz(songs, tmp_path, tiny):
    from audiotrain.data.audio_io import load_audio

    module, ds = _module(songs, tmp_path)
    i = _index(ds, "song_01")
    item = ds.items[i]
    assert item.row["audio"]["voice"] == item.row["audio"]["vocal"] == str((songs / "song_01_vocal.wav").resolve())
    spec = ds.streams["voice"]
    assert (spec.sample_rate, spec.channels, spec.required, spec.source) == (24000, 1, False, "vocal")
    audio, n = load_audio(item.row["audio"]["vocal"], spec)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the cache build's workers compute (dataset.prepare_workers): the same bits
    try:
        want = V.VoiceFeature(tiny, 2).encode({"audio": torch.from_numpy(audio), "audio_length": n,
                                               "key": item.row["key"]})
    finally:
        torch.set_num_threads(threads)
    cached = ds[i]["features"]
    assert torch.equal(cached["mert_hidden"], want["mert_hidden"]) and cached["mert_voiced"].all()
    assert "voice" not in ds.items[_index(ds, "nostems")].durations  # no vocal stem: no voice stream


def test_voice_choices_drop_about_half_reproducibly(songs, tmp_path):
    module, ds = _module(songs, tmp_path, "model.voice_choices=[mert_input,random]")
    a, b = _index(ds, "song_01"), _index(ds, "song_02")
    crops = ds[a]["features"]["mert_hidden"].float()

    def draws(mod, steps=300):
        masks, picked = [], []
        for salt in range(steps):
            batch = mod.features([ds[a], ds[b]], salt=salt, vary=True)
            masks.append(batch["voice_mask"].all(-1))
            assert bool((batch["voice_mask"].any(-1) == batch["voice_mask"].all(-1)).all())  # a row: all or none
            if batch["voice_mask"][0].all():
                picked.append(int(torch.equal(batch["mert_hidden"][0], crops[1])))
                assert torch.equal(batch["mert_hidden"][0], crops[picked[-1]])
            else:
                assert not batch["mert_hidden"][0].any()
        return torch.stack(masks), picked

    masks, picked = draws(module)
    kept = int(masks.sum())
    # binomial(600, 1/2): mean 300, sd 12.2; +-4.5 sd
    assert 245 <= kept <= 355, kept
    assert 0.3 < sum(picked) / len(picked) < 0.7  # both cached crops are used
    # a new module (a resumed run) with the same seed: the same draws; another seed: others
    again, picked_again = draws(_module(songs, tmp_path, "model.voice_choices=[mert_input,random]")[0], 100)
    assert torch.equal(masks[:100], again) and picked[: len(picked_again)] == picked_again
    other, _ = draws(_module(songs, tmp_path, "model.voice_choices=[mert_input,random]", "seed=7")[0], 100)
    assert not torch.equal(masks[:100], other)
    # evaluation and samples (no rng): crop 0, with its voice
    batch = module.features([ds[a], ds[b]], salt=0)
    assert batch["voice_mask"].all() and torch.equal(batch["mert_hidden"][0], crops[0])


def test_always_a_voice_and_the_p_one_third_drop(songs, tmp_path):
    module, ds = _module(songs, tmp_path, "model.voice_choices=[mert_input,mert_input,random]")
    a, b = _index(ds, "song_01"), _index(ds, "song_02")
    kept = sum(int(module.features([ds[a], ds[b]], salt=s, vary=True)["voice_mask"].all(-1).sum()) for s in range(300))
    assert 400 - 4.5 * 11.5 <= kept <= 400 + 4.5 * 11.5, kept  # binomial(600, 2/3): mean 400, sd 11.5
    module, ds = _module(songs, tmp_path / "always")
    assert all(module.features([ds[a], ds[b]], salt=s, vary=True)["voice_mask"].all() for s in range(50))


def test_a_dropped_voice_is_fully_masked_and_the_loss_is_the_zero_voices(songs, tmp_path, tiny):
    module, ds = _module(songs, tmp_path)
    plugin = registry.get("songgen")
    backbone = module.backbone.eval()
    a, b = _index(ds, "song_01"), _index(ds, "song_02")
    items = [dict(plugin.choose_variant(ds[i]["features"], None)) for i in (a, b)]
    voiced = plugin.collate(items)
    dropped = plugin.collate([items[0], {**items[1], "voice_on": torch.tensor(False)}])
    assert voiced["voice_mask"].all() and voiced["mert_hidden"].dtype == torch.float32
    assert dropped["voice_mask"][0].all() and not dropped["voice_mask"][1].any()
    assert torch.equal(dropped["mert_hidden"][0], voiced["mert_hidden"][0])

    def with_row_1(states):  # the voiced batch with song 2's voice replaced by ``states``, masked
        mert = voiced["mert_hidden"].clone()
        mert[1] = states
        return {**voiced, "mert_hidden": mert, "voice_mask": dropped["voice_mask"]}

    zeros = with_row_1(torch.zeros(224, 25, 16))
    # the original's dropped voice: MERT run on an all-zero 3 s waveform, the row masked
    silence = with_row_1(tiny.states(M.normalise(torch.zeros(72000))[None])[0])
    real = with_row_1(voiced["mert_hidden"][1])
    assert all(torch.equal(dropped[k], zeros[k]) for k in ("mert_hidden", "voice_mask"))
    with torch.no_grad():
        loss = {name: backbone.training_losses(x)["loss"] for name, x in
                (("voiced", voiced), ("dropped", dropped), ("zeros", zeros), ("silence", silence), ("real", real))}
    assert torch.equal(loss["dropped"], loss["zeros"])
    # a masked voice gets exactly zero attention weight: what the masked states hold does not matter
    assert torch.allclose(loss["dropped"], loss["silence"], rtol=0, atol=1e-6)
    assert torch.allclose(loss["dropped"], loss["real"], rtol=0, atol=1e-6)
    assert (loss["voiced"] - loss["dropped"]).abs() > 1e-6  # the voice does reach the model


def test_songs_without_a_vocal_stem_train_with_a_masked_voice(songs, tmp_path):
    module, ds = _module(songs, tmp_path)
    n, a = _index(ds, "nostems"), _index(ds, "song_01")
    assert "mert_hidden" not in ds[n]["features"]
    backbone = module.backbone.train()
    for salt in range(5):
        batch = module.features([ds[n], ds[a]], salt=salt, vary=True)
        assert not batch["voice_mask"][0].any() and batch["voice_mask"][1].all()
        assert batch["mert_hidden"].shape == (2, 224, 25, 16)
    mert = batch["mert_hidden"].clone().requires_grad_(True)
    losses = backbone.training_losses({**batch, "mert_hidden": mert})
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert mert.grad[1].abs().sum() > 0  # the voiced song's voice reaches the loss
    assert not mert.grad[0].any()  # the masked one does not, at all
    # a batch of songs without voices only: still the voice's shape, all masked
    batch = module.features([ds[n], ds[n]], salt=0, vary=True)
    assert batch["mert_hidden"].shape == (2, 224, 25, 16) and not batch["voice_mask"].any()
    assert torch.isfinite(backbone.training_losses(batch)["loss"])


def test_voice_false_runs_no_mert_and_feeds_no_voice(songs, tmp_path):
    plugin = registry.get("songgen")
    cfg = _cfg(songs, tmp_path, "model.voice=false")
    assert "voice" not in plugin.audio_streams(cfg)
    assert "voice" not in [e.name for e in plugin.build_encoders(cfg)]
    module, ds = _module(songs, tmp_path, "model.voice=false")
    batch = module.features([ds[0], ds[1]], salt=0, vary=True)
    assert "mert_hidden" not in batch and "voice_mask" not in batch
    assert "voice" in [e.name for e in plugin.build_encoders(_cfg(songs, tmp_path))]


# ---- config ------------------------------------------------------------------------------------------------------
def test_validation_of_the_voice_settings(songs, tmp_path):
    plugin = registry.get("songgen")

    def problems(*extra):
        return " ".join(plugin.validate(_cfg(songs, tmp_path, *extra)))

    assert "mert" not in problems().lower()
    released = problems("model.preset=mixed_pro")
    assert ("model.preset=mixed_pro feeds a reference voice through MERT-v1-330M: give model.mert_path=<a local "
            "m-a-p/MERT-v1-330M folder>, or model.voice=false to train without a voice prompt.") in released
    assert "model.mert_path" not in problems("model.preset=mixed_pro", "model.voice=false")
    assert "model.voice_choices=['mert_input', 'drop']" in problems("model.voice_choices=[mert_input,drop]")
    assert "model.voice_choices=[]" in problems("model.voice_choices=[]")
    assert "model.voice_crops=0" in problems("model.voice_crops=0")
    assert f"model.mert_path={tmp_path / 'nope'} is not a folder" in problems(f"model.mert_path={tmp_path / 'nope'}")


def test_a_mert_that_does_not_fit_the_voice_branch_is_one_sentence(songs, tmp_path):
    folder = write_mert(tmp_path / "m", reference_hubert())  # 4 states, the tiny composite takes 25
    cfg = _cfg(songs, tmp_path, f"model.mert_path={folder}")
    sentence = (f"model.mert_path={folder} gives 4 hidden states of width 16, but the model's voice branch "
                f"(mert_layer_agg, audio_mert_to_dec_proj) takes 25 of width 16")
    plugin = registry.get("songgen")
    assert any(p.startswith(sentence) for p in plugin.validate(cfg))  # found before any model is built
    with pytest.raises(UserError, match=re.escape(sentence)):
        plugin.build_encoders(cfg)


STAGE_CHOICES = {"step1": ["mert_input"], "step1_5": ["mert_input"],
                 "step2_a": ["mert_input", "mert_input", "random"], "step2_b": ["mert_input", "random"],
                 "step3": ["mert_input", "random"]}


@pytest.mark.parametrize("stage", ["mixed_pro/step1", "mixed_pro/step2_a", "mixed_pro/step2_b", "mixed_pro/step3",
                                   "inter_A_V/step1_5", "inter_A_V/step2_a", "inter_A_V/step2_b", "inter_A_V/step3"])
def test_every_stage_drops_the_voice_as_the_original(stage):
    cfg = compose(["model=songgen", f"experiment=songgen/{stage}"])
    assert list(cfg.model.voice_choices) == STAGE_CHOICES[stage.split("/")[1]] and cfg.model.voice is True
    header = (ROOT / "plugins/songgen/conf/experiment/songgen" / f"{stage}.yaml").read_text()
    assert "does not feed a voice prompt" not in header and "model.voice_choices" in header


def test_choose_keeps_the_cached_features_and_takes_crop_0_without_rng():
    feats = {"mert_hidden": torch.arange(2 * 3 * 25 * 2, dtype=torch.float16).reshape(2, 3, 25, 2),
             "mert_voiced": torch.tensor([True, False]), "codes_mix": torch.zeros(8, 4)}
    out = V.choose(feats, None, ["random"])
    assert torch.equal(out["mert_hidden"], feats["mert_hidden"][0]) and bool(out["voice_on"])
    assert feats["mert_hidden"].shape == (2, 3, 25, 2) and "mert_voiced" in feats  # not changed in place
    picks = [V.choose(feats, random.Random(i), ["mert_input"]) for i in range(50)]
    # crop 1 is silent: whenever it is picked the voice is off
    assert {bool(p["voice_on"]) for p in picks} == {True, False}
    assert all(bool(p["voice_on"]) == torch.equal(p["mert_hidden"], feats["mert_hidden"][0]) for p in picks)
