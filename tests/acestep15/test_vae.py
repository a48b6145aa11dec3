"""ACE-Step 1.5's Oobleck VAE: the release layout on the meta device, the tiny preset's shapes and posterior, the
vae/ folder round trip (bit-exact, strict) and tiled encoding equal to one-pass encoding."""
from __future__ import annotations

import json
import pytest
import torch
import torch.nn.functional as F

from audiotrain.errors import UserError
from audiotrain_acestep15.vae import VAE_PRESETS, OobleckConfig, OobleckVAE, build_vae, sample
from audiotrain_acestep15.vae_files import VAE_WEIGHTS, load_vae, save_vae
from audiotrain_acestep15.vae_tiling import tile_plan
from tests.ref_keys import ref_keys


@pytest.fixture(scope="module")
def tiny() -> OobleckVAE:
    return build_vae("tiny", seed=0).eval()


def test_release_layout_on_meta_matches_the_reference_key_list():
    ref = ref_keys("acestep15_vae")
    with torch.device("meta"):
        vae = OobleckVAE(VAE_PRESETS["release"])
    got = {k: list(v.shape) for k, v in vae.state_dict().items()}
    assert got == ref["keys"]
    assert list(got) == list(ref["keys"])
    assert (len(got), sum(p.numel() for p in vae.parameters())) == (365, 168_695_426) == (ref["num_keys"],
                                                                                          ref["num_params"])
    assert vae.config.to_json() == {"_class_name": "AutoencoderOobleck", **ref["config"]}


def test_release_layout_agrees_with_the_published_facts():
    """Shapes third-party ports read from the released file; 35 keys per block; weight_norm's g/v names only."""
    keys = ref_keys("acestep15_vae")["keys"]
    assert keys["decoder.conv1.weight_v"] == [2048, 64, 7] and keys["decoder.conv1.weight_g"] == [2048, 1, 1]
    assert keys["decoder.block.0.conv_t1.weight_v"] == [2048, 1024, 20]
    assert keys["decoder.block.0.conv_t1.weight_g"] == [2048, 1, 1]  # per input channel: dim 0 of [in, out, k]
    assert keys["decoder.block.0.res_unit1.snake1.alpha"] == [1, 1024, 1]
    assert keys["decoder.conv2.weight_v"] == [2, 128, 7] and "decoder.conv2.bias" not in keys
    assert keys["encoder.conv1.weight_v"] == [128, 2, 7] and keys["encoder.conv2.weight_v"] == [128, 2048, 3]
    assert keys["encoder.block.4.conv1.weight_v"] == [2048, 1024, 20]
    for side in ("encoder", "decoder"):
        for b in range(5):
            assert sum(k.startswith(f"{side}.block.{b}.") for k in keys) == 35
    assert sum(k.startswith("encoder.") for k in keys) == 183 and sum(k.startswith("decoder.") for k in keys) == 182
    assert not any(".weight" == k[-7:] or "parametrizations" in k for k in keys)
    cfg = VAE_PRESETS["release"]
    assert (cfg.hop_length, cfg.frame_rate, cfg.latent_channels) == (1920, 25.0, 64)


def test_tiny_shapes_posterior_and_decode(tiny):
    audio = torch.randn(2, 2, 1920 * 3 + 700)
    with torch.no_grad():
        post = tiny.encode(audio)
        moments = tiny.encoder(audio)
    assert post.mean.shape == post.std.shape == (2, 8, 3)
    torch.testing.assert_close(post.mean, moments[:, :8], rtol=0, atol=0)
    torch.testing.assert_close(post.std, F.softplus(moments[:, 8:]) + 1e-4, rtol=0, atol=0)
    assert float(post.std.min()) >= 1e-4
    with torch.no_grad():
        wave = tiny.decode(post.mean)
    assert wave.shape == (2, 2, 1920 * 3) and torch.isfinite(wave).all()
    mean, std = tiny.encode_posterior(audio[0])
    assert mean.shape == std.shape == (3, 8)  # time-major, no batch dim for a single song
    torch.testing.assert_close(mean, post.mean[0].T)
    torch.testing.assert_close(tiny.decode_latents(mean), wave[0])


def test_sample_is_reproducible_and_follows_the_posterior():
    mean, std = torch.randn(4000, 8), torch.rand(4000, 8) + 0.5
    a = sample(mean, std, torch.Generator().manual_seed(7))
    b = sample(mean, std, torch.Generator().manual_seed(7))
    c = sample(mean, std, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    z = (a - mean) / std
    assert abs(float(z.mean())) < 0.03 and abs(float(z.std()) - 1.0) < 0.03
    with pytest.raises(UserError, match="differ in shape"):
        sample(mean, std[:10])


def test_vae_folder_round_trip_is_bit_exact(tiny, tmp_path):
    folder = save_vae(tiny, tmp_path / "vae")
    config = json.loads((folder / "config.json").read_text())
    assert config["_class_name"] == "AutoencoderOobleck" and config["downsampling_ratios"] == [2, 4, 4, 6, 10]
    back = load_vae(folder)
    want, got = tiny.state_dict(), back.state_dict()
    assert list(want) == list(got) and all(torch.equal(want[k], got[k]) for k in want)
    assert not any(p.requires_grad for p in back.parameters()) and not back.training
    audio = torch.randn(1, 2, 1920 * 2)
    with torch.no_grad():
        assert torch.equal(tiny.decode(tiny.encode(audio).mean), back.decode(back.encode(audio).mean))
    assert back.cache_key() == tiny.cache_key()


def test_loading_is_strict_with_one_sentence_errors(tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = save_vae(tiny, tmp_path / "vae")
    state = load_file(str(folder / VAE_WEIGHTS))
    save_file({k: v for k, v in state.items() if k != "decoder.conv1.weight_g"} | {"extra.weight": torch.ones(1)},
              str(folder / VAE_WEIGHTS))
    with pytest.raises(UserError) as err:
        load_vae(folder, option="model.vae_dir")
    text = str(err.value)
    assert "1 missing, 1 unexpected and 0 mis-shaped" in text and "decoder.conv1.weight_g" in text
    assert "model.vae_dir=" in text and "\n" not in text
    with pytest.raises(UserError, match="missing-folder does not exist; pass ACE-Step 1.5's vae/ folder"):
        load_vae(tmp_path / "missing-folder")
    (folder / VAE_WEIGHTS).unlink()
    with pytest.raises(UserError, match="lacks diffusion_pytorch_model.safetensors"):
        load_vae(folder)
    with pytest.raises(UserError, match="not an AutoencoderOobleck"):
        OobleckConfig.from_json({"_class_name": "AutoencoderKL"})
    with pytest.raises(UserError, match="does not take"):
        OobleckConfig.from_json({"latent_channels": 64})


def test_tile_plan_covers_every_frame_once():
    hop = 1920
    plan = tile_plan(hop * 100 + 5, hop, chunk=hop * 30, overlap=hop * 8)
    kept = [f for _, _, a, b in plan for f in range(a, b)]
    assert kept == list(range(100))
    assert all(ws % hop == 0 and ws <= a * hop and b * hop <= we for ws, we, a, b in plan)
    assert all(we - ws <= hop * 30 for ws, we, _, _ in plan)
    assert tile_plan(hop * 30, hop, chunk=hop * 30, overlap=hop * 8) == [(0, hop * 30, 0, 30)]


def test_tiled_encode_equals_one_pass_encode(tiny):
    """Overlap 0.28 s (7 frames) exceeds the encoder's reach (12,165 samples each side): three tiles give the
    one-pass latents exactly (float rounding at most); the release defaults (30 s / 2 s) keep a 26 s core."""
    torch.manual_seed(1)
    audio = torch.randn(1, 2, 1920 * 24 + 1234) * 0.3
    with torch.no_grad():
        whole = tiny.encoder(audio)
    assert len(tile_plan(audio.shape[-1], 1920, 1920 * 22, 1920 * 7)) == 3
    mean, std = tiny.encode_posterior(audio, chunk_seconds=0.88, overlap_seconds=0.28)
    assert mean.shape == (1, 24, 8)
    torch.testing.assert_close(mean, whole[:, :8].transpose(1, 2), rtol=0, atol=1e-5)
    torch.testing.assert_close(std, (F.softplus(whole[:, 8:]) + 1e-4).transpose(1, 2), rtol=0, atol=1e-5)
    release = tile_plan(48000 * 100, 1920, 48000 * 30, 48000 * 2)
    assert [(a, b) for _, _, a, b in release] == [(0, 650), (650, 1300), (1300, 1950), (1950, 2500)]
    with pytest.raises(UserError, match="leaves no core"):
        tiny.encode_posterior(audio, chunk_seconds=0.88, overlap_seconds=0.44)


def test_receptive_field_is_inside_the_overlap(tiny):
    """The measured reach behind the tiled-encode tolerance: one latent frame depends on 12,165 samples either side
    of its own 1,920 (same kernels/dilations/strides as the release)."""
    audio = torch.randn(1, 2, 1920 * 16, requires_grad=True)
    tiny.encoder(audio)[0, :, 8].sum().backward()
    used = (audio.grad.abs().sum(1)[0] > 0).nonzero()
    assert (8 * 1920 - int(used.min()), int(used.max()) - (9 * 1920 - 1)) == (12165, 12165)
    assert 12165 < 8 * 1920 < 2 * 48000


def test_bad_audio_is_one_sentence(tiny):
    with pytest.raises(UserError, match=r"\[batch, 2, samples\]"):
        tiny.encode(torch.randn(1, 1, 4000))
    with pytest.raises(UserError, match="fewer than one latent frame"):
        tiny.encode(torch.randn(1, 2, 1000))
    with pytest.raises(UserError, match="channel-first"):
        tiny.decode(torch.randn(1, 10, 8))
