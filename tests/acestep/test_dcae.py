"""ACE-Step music DC-AE (diffusers AutoencoderDC layout) and the MusicDCAE codec: key layout vs. the released
model, the DC-AE shortcuts and linear attention numerics, and tiny encode/decode/save/load round trips."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from audiotrain_acestep.dcae import AutoencoderDC
from audiotrain_acestep.dcae_blocks import DCDownBlock2d, DCUpBlock2d, MultiscaleLinearAttention, RMSNorm
from audiotrain_acestep.dcae_presets import DCAE_PRESETS, dcae_preset
from audiotrain_acestep.music_dcae import CONFIG_NAME, WEIGHTS_NAME, MusicDCAE
from tests.ref_keys import ref_keys


# ----------------------------------------------------------------------------- layout


def test_v1_preset_matches_reference_config():
    assert DCAE_PRESETS["v1"] == json.loads(json.dumps(ref_keys("acestep_dcae")["config"]))


def test_v1_dcae_keys_shapes_and_param_count_on_meta():
    ref = ref_keys("acestep_dcae")
    with torch.device("meta"):
        model = AutoencoderDC.from_config(dcae_preset("v1"))
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert got == ref["keys"]
    assert len(got) == ref["num_keys"] == 192
    assert sum(p.numel() for p in model.parameters()) == ref["num_params"] == 156_812_426
    assert list(model.buffers()) == []
    assert model.spatial_compression_ratio == 8


# ----------------------------------------------------------------------------- block numerics


def test_rms_norm():
    norm = RMSNorm(4)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
        norm.bias.copy_(torch.tensor([0.0, 1.0, 0.0, -1.0]))
    x = torch.tensor([[1.0, -1.0, 1.0, -1.0], [2.0, 0.0, 0.0, 0.0]])
    expect = torch.tensor([[1.0, -1.0, 3.0, -5.0], [2.0, 1.0, 0.0, -1.0]])  # rms = 1 and 1
    torch.testing.assert_close(norm(x), expect, rtol=1e-4, atol=1e-4)


def test_down_block_space_to_channel_shortcut():
    block = DCDownBlock2d(3, 6, downsample=False, shortcut=True)  # group size 4*3/6 = 2
    torch.nn.init.zeros_(block.conv.weight)
    torch.nn.init.zeros_(block.conv.bias)
    x = torch.randn(2, 3, 4, 6)
    y = block(x)
    assert y.shape == (2, 6, 2, 3)
    # channel c*4 + 2i + j of the unshuffled map is x[c, 2h+i, 2w+j]; consecutive pairs are averaged
    unshuffled = torch.stack(
        [x[:, c, i::2, j::2] for c in range(3) for i in range(2) for j in range(2)], dim=1
    )
    torch.testing.assert_close(y, 0.5 * (unshuffled[:, 0::2] + unshuffled[:, 1::2]))
    assert block.conv.stride == (2, 2)


def test_up_block_channel_to_space_shortcut_and_interpolate_path():
    block = DCUpBlock2d(4, 2, interpolate=True, shortcut=True)  # repeats 4*2/4 = 2
    torch.nn.init.zeros_(block.conv.weight)
    torch.nn.init.zeros_(block.conv.bias)
    x = torch.randn(1, 4, 3, 5)
    y = block(x)
    assert y.shape == (1, 2, 6, 10)
    for o in range(2):
        for i in range(2):
            for j in range(2):
                torch.testing.assert_close(y[:, o, i::2, j::2], x[:, (o * 4 + i * 2 + j) // 2])
    # main path = conv(nearest x2 upsample)
    block2 = DCUpBlock2d(4, 2, interpolate=True, shortcut=False)
    up = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    torch.testing.assert_close(block2(x), block2.conv(up))


def test_encoder_out_and_decoder_in_shortcuts():
    torch.manual_seed(0)
    model = AutoencoderDC.from_config(dcae_preset("tiny"))
    for conv in (model.encoder.conv_out, model.decoder.conv_in):
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    h = torch.randn(1, 64, 2, 3)
    feats = {}
    model.encoder.down_blocks[-1].register_forward_hook(lambda m, i, o: feats.setdefault("h", o))
    z = model.encoder(torch.randn(1, 2, 16, 24))
    torch.testing.assert_close(z, feats["h"].reshape(1, 8, 8, 2, 3).mean(dim=2))  # 64 -> 8 groups of 8
    seen = {}
    model.decoder.up_blocks[-1].register_forward_pre_hook(lambda m, i: seen.setdefault("x", i[0]))
    model.decoder(h[:, :8])
    torch.testing.assert_close(seen["x"], h[:, :8].repeat_interleave(8, dim=1))


def _naive_relu_attention(x: torch.Tensor, attn: MultiscaleLinearAttention) -> torch.Tensor:
    """Per-head loop, quadratic form, float64: out_n = sum_m v_m (k_m . q_n) / sum_m (k_m . q_n)."""
    b, c, hgt, wid = x.shape
    pix = x.double().movedim(1, -1)
    qkv = torch.cat([pix @ attn.to_q.weight.double().T, pix @ attn.to_k.weight.double().T,
                     pix @ attn.to_v.weight.double().T], dim=-1).movedim(-1, 1)
    maps = [qkv]
    for branch in attn.to_qkv_multiscale:
        inner = F.conv2d(qkv, branch.proj_in.weight.double(), padding=branch.proj_in.padding, groups=qkv.shape[1])
        maps.append(F.conv2d(inner, branch.proj_out.weight.double(), groups=branch.proj_out.groups))
    stacked = torch.cat(maps, dim=1).reshape(b, -1, hgt * wid)
    d = attn.attention_head_dim
    heads = []
    for g in range(stacked.shape[1] // (3 * d)):
        chunk = stacked[:, g * 3 * d : (g + 1) * 3 * d]
        q, k, v = chunk[:, :d].relu(), chunk[:, d : 2 * d].relu(), chunk[:, 2 * d :]
        w = torch.einsum("bdm,bdn->bmn", k, q)
        heads.append(torch.einsum("bdm,bmn->bdn", v, w) / (w.sum(dim=1, keepdim=True) + attn.eps))
    out = torch.cat(heads, dim=1).reshape(b, -1, hgt, wid)
    out = (out.movedim(1, -1) @ attn.to_out.weight.double().T)
    rms = out.pow(2).mean(-1, keepdim=True).add(attn.norm_out.eps).rsqrt()
    out = out * rms * attn.norm_out.weight.double() + attn.norm_out.bias.double()
    return out.movedim(-1, 1) + x.double()


@pytest.mark.parametrize("size", [(4, 6), (2, 3)])  # 24 > head_dim: linear form; 6 <= 8: quadratic form
def test_multiscale_linear_attention_matches_naive_reference(size):
    torch.manual_seed(0)
    attn = MultiscaleLinearAttention(16, 16, attention_head_dim=8, kernel_sizes=(5,))
    with torch.no_grad():
        attn.norm_out.weight.uniform_(0.5, 1.5)
        attn.norm_out.bias.uniform_(-0.2, 0.2)
    assert attn.to_qkv_multiscale[0].proj_out.groups == 3 * 2
    x = torch.randn(2, 16, *size)
    torch.testing.assert_close(attn(x).double(), _naive_relu_attention(x, attn), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- MusicDCAE (tiny)


@pytest.fixture(scope="module")
def tiny() -> MusicDCAE:
    torch.manual_seed(0)
    return MusicDCAE.from_preset("tiny").eval()


def _clips() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    t = torch.arange(192000, dtype=torch.float64) / 48000
    tone = torch.stack([torch.sin(2 * math.pi * 220 * t), torch.sin(2 * math.pi * 330 * t)])
    audios = (0.3 * tone + 0.05 * torch.randn(2, 192000, generator=g, dtype=torch.float64)).float()
    audios = audios.unsqueeze(0).repeat(2, 1, 1)
    lengths = torch.tensor([144000, 192000])  # 3 s and 4 s at 48 kHz
    audios[0, :, 144000:] = 0
    return audios, lengths


def test_latent_length_rule(tiny):
    lengths = torch.tensor([144000, 192000, 240 * 48000, 48000 * 4096 // 44100])
    expect = [math.floor(n * 44100 / 48000 / 512 / 8) for n in lengths.tolist()]
    assert tiny.latent_lengths_for(lengths).tolist() == expect == [32, 43, 2583, 0]
    assert tiny.latent_lengths_for([655360]).tolist() == [147]  # exactly 147 latent frames, no float rounding
    assert tiny.latent_rate == pytest.approx(44100 / 512 / 8)


def test_tiny_encode_decode_shapes_and_lengths(tiny):
    audios, lengths = _clips()
    latents, latent_lengths = tiny.encode(audios, lengths)
    n44 = math.ceil(192000 * 147 / 160)  # 176400 samples at 44.1 kHz
    frames = math.ceil(n44 / 4096) * 4096 // 512  # padded to a multiple of 4096 -> 352 mel frames
    assert latents.shape == (2, 8, 16, frames // 8) == (2, 8, 16, 44)
    assert latent_lengths.tolist() == [32, 43] and latent_lengths.dtype == torch.long
    assert torch.isfinite(latents).all()
    # batched encoding equals encoding each clip alone (the 4 s clip sets the padded length either way)
    alone, _ = tiny.encode(audios[1:], lengths[1:])
    torch.testing.assert_close(latents[1:], alone, rtol=1e-4, atol=1e-5)

    sr, wavs = tiny.decode(latents, lengths)
    assert sr == 48000
    assert wavs.shape == (2, 2, 192000) and wavs.dtype == torch.float32
    assert float(wavs[0, :, 144000:].abs().max()) == 0.0  # cropped to its own length
    assert float(wavs[0, :, :144000].abs().max()) > 0.0
    assert float(wavs.abs().max()) <= 1.0 + 1e-3
    sr, full = tiny.decode(latents[1:])  # no lengths: the whole decoded signal
    assert full.shape == (1, 2, math.ceil(44 * 4096 * 160 / 147))
    torch.testing.assert_close(full[0, :, :192000], wavs[1])
    sr44, w44 = tiny.decode(latents[:1, :, :, :8], sr=44100)  # no resampling at the internal rate
    assert sr44 == 44100 and w44.shape == (1, 2, 8 * 4096)


def test_tiny_from_pretrained_round_trip_is_bit_exact(tiny, tmp_path):
    audios = _clips()[0][:, :, :48000]  # 0.75 s and 1 s
    lengths = torch.tensor([36000, 48000])
    dcae_dir, voc_dir = tmp_path / "music_dcae_f8c8", tmp_path / "music_vocoder"
    tiny.save_pretrained(dcae_dir, voc_dir)
    assert sorted(p.name for p in dcae_dir.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    assert json.loads((voc_dir / CONFIG_NAME).read_text())["_class_name"] == "ADaMoSHiFiGANV1"
    loaded = MusicDCAE.from_pretrained(dcae_dir, voc_dir)
    for key, value in tiny.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    lat_a, len_a = tiny.encode(audios, lengths)
    lat_b, len_b = loaded.encode(audios, lengths)
    assert torch.equal(lat_a, lat_b) and torch.equal(len_a, len_b)
    assert torch.equal(tiny.decode(lat_a, lengths)[1], loaded.decode(lat_b, lengths)[1])


def test_from_pretrained_partial_config_falls_back_to_v1_values(tiny, tmp_path):
    dcae_dir, voc_dir = tmp_path / "d", tmp_path / "v"
    tiny.save_pretrained(dcae_dir, voc_dir)
    cfg = json.loads((dcae_dir / CONFIG_NAME).read_text())
    v1 = dcae_preset("v1")
    partial = {k: v for k, v in cfg.items() if k not in v1 or v1[k] != v}  # drop every key equal to v1
    assert "latent_channels" not in partial and "encoder_block_out_channels" in partial
    (dcae_dir / CONFIG_NAME).write_text(json.dumps(partial))
    loaded = MusicDCAE.from_pretrained(dcae_dir, voc_dir, dtype=torch.bfloat16)
    assert loaded.dcae_config["latent_channels"] == 8
    assert next(loaded.dcae.parameters()).dtype == torch.bfloat16
    assert loaded.vocoder.mel_transform.mel_scale.fb.dtype == torch.float32
    latents, _ = loaded.encode(_clips()[0][:1, :, :48000])
    assert latents.shape == (1, 8, 16, 11) and latents.dtype == torch.bfloat16  # 1 s -> 45056 samples


def test_from_pretrained_errors(tiny, tmp_path):
    dcae_dir, voc_dir = tmp_path / "d", tmp_path / "v"
    tiny.save_pretrained(dcae_dir, voc_dir)
    (voc_dir / WEIGHTS_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=r"vocoder weights file .*diffusion_pytorch_model\.safetensors"):
        MusicDCAE.from_pretrained(dcae_dir, voc_dir)
    with pytest.raises(FileNotFoundError, match="DCAE weights file"):
        MusicDCAE.from_pretrained(tmp_path / "nowhere", voc_dir)
    # weights that do not fit the config: a clear mismatch error, not a silent partial load
    tiny.save_pretrained(tmp_path / "d2", voc_dir)
    (tmp_path / "d2" / CONFIG_NAME).write_text("")  # empty config -> v1 architecture, tiny weights
    with pytest.raises(ValueError, match="does not match the DCAE architecture"):
        MusicDCAE.from_pretrained(tmp_path / "d2", voc_dir)
