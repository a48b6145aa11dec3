"""REPA teacher features (MERT / mHuBERT stand-ins): shapes, normalisation, chunking, cache and training wiring.

The teachers are two tiny random HubertModels saved to disk (hidden 16 and 12, the tiny transformer's
``ssl_latent_dims``). Their feature encoder is conv(k10, s5) → conv(k3, s2): a hop of 10 samples per
frame and a receptive field of 20, so the per-teacher spec carries ``samples_per_frame=10`` (not 320).
"""
from __future__ import annotations

import math

import pytest
import torch
import transformers
from safetensors.torch import save_file

from audiotrain.errors import UserError
from audiotrain_acestep import ssl_teachers
from audiotrain_acestep.ssl_teachers import SSLTeacherFeature, TeacherSpec

HOP = 10
TINY_SPECS = (
    TeacherSpec("mert", "model.ssl.mert_path", "m-a-p/MERT-v1-330M", 24000, chunk_samples=2000, samples_per_frame=HOP),
    TeacherSpec("m-hubert", "model.ssl.mhubert_path", "utter-project/mHuBERT-147", 16000, chunk_samples=3000,
                samples_per_frame=HOP),
)


def tiny_hubert(hidden: int, seed: int) -> transformers.HubertModel:
    cfg = transformers.HubertConfig(
        hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2, intermediate_size=2 * hidden,
        conv_dim=(8, 8), conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=4, vocab_size=4)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transformers.HubertModel(cfg).eval()


def conv_frames(n: int) -> int:
    """Frames the tiny feature encoder gives for ``n`` input samples (no padding in HuBERT's convs)."""
    return ((n - 10) // 5 + 1 - 3) // 2 + 1


def expected_frames(valid: int, spec: TeacherSpec) -> int:
    """Σ over chunks of ceil(valid_c / hop), capped at what a (zero-padded) full chunk yields."""
    lengths = [min(spec.chunk_samples, valid - s) for s in range(0, valid, spec.chunk_samples)]
    return sum(min(math.ceil(n / spec.samples_per_frame), conv_frames(spec.chunk_samples)) for n in lengths)


@pytest.fixture(scope="module")
def teacher_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("teachers")
    dirs = []
    for name, hidden, seed in (("mert", 16, 1), ("mhubert", 12, 2)):
        model = tiny_hubert(hidden, seed)
        # the save_pretrained layout (config.json + model.safetensors); the model's own save_pretrained would
        # import deepspeed through accelerate here, seconds for nothing
        model.config.save_pretrained(root / name)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / name / "model.safetensors"))
        dirs.append(root / name)
    return dirs


@pytest.fixture(scope="module")
def feature(teacher_dirs):
    return SSLTeacherFeature.from_folders(teacher_dirs, TINY_SPECS, expected_dims=[16, 12])


def song(n: int, seed: int = 0) -> torch.Tensor:
    """Stereo 48 kHz test signal: two tones plus noise, different per channel."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / 48000
    left = 0.4 * torch.sin(2 * math.pi * 440 * t) + 0.1 * torch.randn(n, generator=g)
    right = 0.3 * torch.sin(2 * math.pi * 1234 * t) + 0.1 * torch.randn(n, generator=g)
    return torch.stack([left, right]).float()


def test_hop_matches_the_models_output_length(feature):
    model = feature.models[0]
    for n in (20, 29, 30, 777, 2000, 2990, 3000):
        assert model(input_values=torch.zeros(1, n)).last_hidden_state.shape[1] == conv_frames(n)
    # hop 10: ten more samples give exactly one more frame; a full chunk gives chunk/hop - 1 frames (receptive
    # field 20), like MERT's 374 for a 5 s chunk, so frames_per_chunk caps ceil(2000/10) = 200 at 199
    assert all(conv_frames(n + HOP) == conv_frames(n) + 1 for n in range(20, 400))
    spec = TINY_SPECS[0]
    assert conv_frames(2000) == 199 and ssl_teachers.frames_per_chunk(2000, spec, 199) == 199
    assert all(ssl_teachers.frames_per_chunk(v, spec, 199) == math.ceil(v / HOP) for v in range(1, 1991))
    assert ssl_teachers.MERT.samples_per_frame == ssl_teachers.MHUBERT.samples_per_frame == 320
    assert (ssl_teachers.MERT.sample_rate, ssl_teachers.MERT.chunk_samples) == (24000, 120000)
    assert (ssl_teachers.MHUBERT.sample_rate, ssl_teachers.MHUBERT.chunk_samples) == (16000, 480000)


def test_shapes_and_valid_length(feature):
    audio = song(15000)
    audio[:, 13001:] = 0.0  # padding after the real 13001 samples
    out = feature.encode({"audio": audio, "audio_length": 13001})
    assert sorted(out) == ["ssl_m-hubert", "ssl_mert"]
    # MERT: 13001 // 2 = 6500 samples @24k → chunks 2000,2000,2000,500 → 199*3 + 50 frames
    # mHuBERT: 13001 // 3 = 4333 samples @16k → chunks 3000,1333 → 299 + 134 frames
    assert out["ssl_mert"].shape == (expected_frames(6500, TINY_SPECS[0]), 16) == (647, 16)
    assert out["ssl_m-hubert"].shape == (expected_frames(4333, TINY_SPECS[1]), 12) == (433, 12)
    for v in out.values():
        assert v.dtype == torch.float32 and v.device.type == "cpu" and torch.isfinite(v).all()
    # only the valid part counts (statistics, chunks): the cropped song gives the same features
    cropped = feature.encode({"audio": audio[:, :13001].clone()})
    for k in out:
        torch.testing.assert_close(cropped[k], out[k], rtol=0, atol=1e-5)


def test_normalisation(feature):
    audio = song(9000, seed=3)
    base = feature.encode({"audio": audio})
    quiet = feature.encode({"audio": 0.05 * audio})
    for k in base:
        torch.testing.assert_close(quiet[k], base[k], rtol=0, atol=2e-4)
    # what the teacher sees: zero mean and unit (unbiased) variance over the real samples
    seen = []
    hook = feature.models[0].register_forward_pre_hook(lambda m, a, kw: seen.append(kw["input_values"].clone()),
                                                        with_kwargs=True)
    try:
        feature.encode({"audio": audio})
    finally:
        hook.remove()
    chunks = seen[0]  # 9000 // 2 = 4500 samples @24k → chunks 2000, 2000, 500 (+1500 zeros)
    assert chunks.shape == (3, 2000) and torch.count_nonzero(chunks[2, 500:]) == 0
    real = torch.cat([chunks[0], chunks[1], chunks[2, :500]]).double()
    assert abs(float(real.mean())) < 1e-5 and abs(float(real.var()) - 1.0) < 1e-4


def test_chunks_are_independent_forwards(feature):
    from audiotrain_acestep.resample import resample

    audio = song(11000, seed=5)  # > 2 chunks for both teachers
    out = feature.encode({"audio": audio})
    mono = audio.mean(dim=0)
    for spec, model in zip(TINY_SPECS, feature.models):
        wav = resample(mono, 48000, spec.sample_rate)
        valid = 11000 * spec.sample_rate // 48000
        x = wav[:valid]
        x = (x - x.mean()) / torch.sqrt(x.var() + 1e-7)
        parts = []
        for start in range(0, valid, spec.chunk_samples):
            piece = x[start:start + spec.chunk_samples]
            n = piece.shape[0]
            padded = torch.cat([piece, piece.new_zeros(spec.chunk_samples - n)])
            with torch.no_grad():
                h = model(input_values=padded[None]).last_hidden_state[0]
            parts.append(h[: min(math.ceil(n / HOP), h.shape[0])])
        assert len(parts) >= 2
        torch.testing.assert_close(out[f"ssl_{spec.name}"], torch.cat(parts), rtol=0, atol=1e-5)


def test_clear_errors(teacher_dirs, tmp_path):
    spec = TINY_SPECS[0]
    with pytest.raises(UserError, match=r"model\.ssl\.mert_path=.* is not a folder"):
        ssl_teachers.load_teacher(tmp_path / "missing", spec)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"model\.ssl\.mert_path=.* has no config\.json"):
        ssl_teachers.load_teacher(tmp_path / "empty", spec)
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(UserError, match=r"model\.ssl\.mert_path=.* has no weights"):
        ssl_teachers.load_teacher(tmp_path / "empty", spec)
    with pytest.raises(UserError, match=r"model\.ssl\.mert_path=.*gives 16-d features .* 12-d .*ssl_latent_dims"):
        SSLTeacherFeature.from_folders(teacher_dirs, TINY_SPECS, expected_dims=[12, 16])


def test_validation_needs_both_folders(tiny_cfg, teacher_dirs, tmp_path):
    from audiotrain_acestep.encoders import build_encoders
    from audiotrain_acestep.plugin import PLUGIN

    one = tiny_cfg(f"model.ssl.mert_path={teacher_dirs[0]}")
    assert ssl_teachers.BOTH_NEEDED in PLUGIN.validate(one)
    assert "both model.ssl.mert_path and model.ssl.mhubert_path" in ssl_teachers.BOTH_NEEDED
    with pytest.raises(UserError, match="both"):
        build_encoders(one)
    bad = tiny_cfg(f"model.ssl.mert_path={teacher_dirs[0]}", f"model.ssl.mhubert_path={tmp_path / 'nope'}")
    assert any(p.startswith("model.ssl.mhubert_path=") and "not a folder" in p for p in PLUGIN.validate(bad))
    assert not PLUGIN.validate(tiny_cfg())
    both = tiny_cfg(f"model.ssl.mert_path={teacher_dirs[0]}", f"model.ssl.mhubert_path={teacher_dirs[1]}")
    assert not PLUGIN.validate(both)
    assert [t.name for t in build_encoders(both)][-1] == "ssl"
    assert "ssl" not in [t.name for t in build_encoders(tiny_cfg())]
    # the cache key follows the chunking/rates and the weight files, not where the folders are
    key = ssl_teachers.cache_key(teacher_dirs, TINY_SPECS)
    assert key != ssl_teachers.cache_key(teacher_dirs, ssl_teachers.SPECS)
    assert key != ssl_teachers.cache_key(teacher_dirs[::-1], TINY_SPECS)
    import shutil

    moved = [tmp_path / "a", tmp_path / "b"]
    for src, dst in zip(teacher_dirs, moved):
        shutil.copytree(src, dst)
    assert ssl_teachers.cache_key(moved, TINY_SPECS) == key
    (moved[1] / "model.safetensors").write_bytes((moved[1] / "model.safetensors").read_bytes() + b" ")
    assert ssl_teachers.cache_key(moved, TINY_SPECS) != key


def _record_metrics(monkeypatch) -> list:
    from audiotrain.train import callbacks

    made = []
    init = callbacks.MetricsToTracker.__init__

    def recording_init(self, tracker):
        init(self, tracker)
        made.append(self)

    monkeypatch.setattr(callbacks.MetricsToTracker, "__init__", recording_init)
    return made


def test_training_with_teachers(tiny_cfg, teacher_dirs, monkeypatch):
    from audiotrain.data.cache import FeatureCache
    from audiotrain.data.dataset import AudioDataset
    from audiotrain.data.prepare import prepare_items, resolve_manifest
    from audiotrain.data.report import BadInputReport
    from audiotrain.train.run import train
    from audiotrain_acestep.plugin import PLUGIN

    monkeypatch.setattr(ssl_teachers, "SPECS", TINY_SPECS)
    made = _record_metrics(monkeypatch)
    cfg = tiny_cfg("trainer.max_steps=2", "model.ssl_coeff=0.5", f"model.ssl.mert_path={teacher_dirs[0]}",
                   f"model.ssl.mhubert_path={teacher_dirs[1]}", run="ssl")
    summary = train(cfg)
    assert summary["steps"] == 2
    history = made[0].history
    assert len(history) == 2
    for h in history:
        mert, mhubert, denoise = h["train/mert_loss"], h["train/m-hubert_loss"], h["train/denoising_loss"]
        assert all(math.isfinite(v) for v in (mert, mhubert, denoise)) and 0 < mert < 2 and 0 < mhubert < 2
        assert h["train/loss"] == pytest.approx(denoise + 0.5 * (mert + mhubert) / 2, rel=1e-5)

    # every feature (teachers included) comes from the cache now: nothing is loaded
    def boom(*a, **k):
        raise AssertionError("a teacher was loaded although its features are cached")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", boom)
    encoders = PLUGIN.build_encoders(cfg)
    assert encoders[-1].name == "ssl"
    cache = FeatureCache(cfg.cache_dir, PLUGIN.name)
    report = BadInputReport()
    spec = PLUGIN.audio_spec(cfg)
    items = prepare_items(resolve_manifest(cfg.data, PLUGIN, report), PLUGIN, spec, encoders, cache, report)
    assert not any(t.loaded for t in encoders)
    data = AudioDataset(items, PLUGIN, spec, encoders, cache)
    feats = [data[i]["features"] for i in range(2)]
    for item, f in zip(items, feats):
        length = round(item.duration * 48000)
        assert f["ssl_mert"].shape == (expected_frames(length // 2, TINY_SPECS[0]), 16)
        assert f["ssl_m-hubert"].shape == (expected_frames(length // 3, TINY_SPECS[1]), 12)

    batch = PLUGIN.collate(feats)
    assert [t.shape for t in batch["ssl_mert"]] == [f["ssl_mert"].shape for f in feats]
    backbone = PLUGIN.build_backbone(cfg).train()
    torch.manual_seed(7)  # the lyric Conformer's dropout draws from the global RNG
    losses = backbone.training_losses(batch, generator=torch.Generator().manual_seed(7))
    assert set(losses) == {"loss", "denoising_loss", "mert_loss", "m-hubert_loss"}
    ssl_mean = (losses["mert_loss"] + losses["m-hubert_loss"]) / 2
    torch.testing.assert_close(losses["loss"], losses["denoising_loss"] + 0.5 * ssl_mean)
    assert float(ssl_mean.detach()) > 0.1
    plain = {k: v for k, v in batch.items() if not k.startswith("ssl_")}
    torch.manual_seed(7)
    without = backbone.training_losses(plain, generator=torch.Generator().manual_seed(7))
    assert set(without) == {"loss", "denoising_loss"}
    torch.testing.assert_close(without["denoising_loss"], losses["denoising_loss"])
    torch.testing.assert_close(without["loss"], without["denoising_loss"])


def test_ssl_coeff_zero_never_loads_teachers(tiny_cfg, teacher_dirs, monkeypatch):
    from audiotrain.train.run import train
    from audiotrain_acestep.encoders import build_encoders

    def boom(*a, **k):
        raise AssertionError("a teacher was loaded with model.ssl_coeff=0")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", boom)
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", boom)
    made = _record_metrics(monkeypatch)
    cfg = tiny_cfg("trainer.max_steps=1", "cache=false", "model.ssl_coeff=0",
                   f"model.ssl.mert_path={teacher_dirs[0]}", f"model.ssl.mhubert_path={teacher_dirs[1]}", run="coeff0")
    assert "ssl" not in [t.name for t in build_encoders(cfg)]
    assert train(cfg)["steps"] == 1
    assert "train/mert_loss" not in made[0].history[0]


def test_a_folder_with_its_own_code_loads_only_with_the_opt_in(teacher_dirs, tmp_path):
    """MERT's folder maps its model to its own *.py files (config.json auto_map): refused unless the user opts in
    with model.ssl.trust_remote_code=true; a folder without code loads as before, and never runs any."""
    import json
    import shutil

    spec = TINY_SPECS[0]
    coded = tmp_path / "coded"
    shutil.copytree(teacher_dirs[0], coded)
    config = json.loads((coded / "config.json").read_text())
    (coded / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "modeling_x.XModel"}}))
    (coded / "modeling_x.py").write_text("raise SystemExit('this code must not run without the opt-in')\n")
    with pytest.raises(UserError, match=r"model\.ssl\.mert_path=.*coded ships its own Python code \(config\.json "
                                        r"auto_map\), .* add model\.ssl\.trust_remote_code=true\."):
        ssl_teachers.load_teacher(coded, spec)
    assert ssl_teachers.folder_problem(coded, spec, allow_code=True) is None
    assert ssl_teachers.declares_code(coded) and not ssl_teachers.declares_code(teacher_dirs[0])
    model = ssl_teachers.load_teacher(teacher_dirs[0], spec)  # no code declared: loads without the opt-in
    assert not model.training and not any(p.requires_grad for p in model.parameters())
