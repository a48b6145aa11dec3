"""ACE-Step vocoder (ADaMoSHiFiGANV1), log-mel front end and the polyphase resampler: key layout vs. the
released model, old-style weight-norm loading, filterbank/STFT numerics and resampling accuracy."""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from audiotrain_acestep.dcae_presets import VOCODER_PRESETS, vocoder_preset
from audiotrain_acestep.mel import (
    LogMelSpectrogram,
    hz_to_mel_slaney,
    mel_to_hz_slaney,
    slaney_mel_filterbank,
    slaney_mel_points,
)
from audiotrain_acestep.resample import resample, resampled_length
from audiotrain_acestep.vocoder import ADaMoSHiFiGANV1, WNConv1d, WNConvTranspose1d
from tests.ref_keys import ref_keys


# ----------------------------------------------------------------------------- layout


def test_v1_preset_matches_reference_config():
    ref = ref_keys("acestep_vocoder")["config"]
    preset = VOCODER_PRESETS["v1"]
    for key, value in preset.items():
        assert json.loads(json.dumps(ref[key])) == value, key
    assert set(preset) == {k for k in ref if not k.startswith("_")}


def test_v1_vocoder_keys_shapes_and_counts_on_meta():
    ref = ref_keys("acestep_vocoder")
    with torch.device("meta"):
        model = ADaMoSHiFiGANV1.from_config(vocoder_preset("v1"))
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert got == ref["keys"]
    assert len(got) == ref["num_keys"] == 713
    assert sum(p.numel() for p in model.parameters()) == ref["num_params"] == 103_005_138
    assert sum(v.numel() for v in model.state_dict().values()) == ref["state_dict_numel"]
    assert sorted(n for n, _ in model.named_buffers()) == sorted(ref["buffer_keys"])
    assert not any(k.endswith(".weight") for k in got if k.startswith("head."))


def test_v1_vocoder_loads_reference_layout_strictly_and_runs():
    ref = ref_keys("acestep_vocoder")
    torch.manual_seed(0)
    with torch.device("meta"):  # no 100M-parameter random init; every tensor comes from the state dict
        model = ADaMoSHiFiGANV1.from_config(vocoder_preset("v1")).eval()
    state = {}
    for key, shape in ref["keys"].items():  # uniform noise: one cheap pass over the 103M values
        low, high = (0.5, 1.5) if key.endswith("weight_g") else (-0.05, 0.05)
        state[key] = torch.empty(shape).uniform_(low, high)
    state["mel_transform.spectrogram.window"] = torch.hann_window(2048)
    state["mel_transform.mel_scale.fb"] = torch.full((1025, 128), 0.25)
    result = model.load_state_dict(state, strict=True, assign=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert all(t.device.type == "cpu" for t in model.state_dict().values())
    # the loaded buffers replace the computed ones
    assert torch.equal(model.mel_transform.mel_scale.fb, state["mel_transform.mel_scale.fb"])
    # the effective weight follows the loaded (g, v) pair
    conv = model.head.resblocks[5].convs1[2]
    g, v = state["head.resblocks.5.convs1.2.weight_g"], state["head.resblocks.5.convs1.2.weight_v"]
    expect = g * v / v.flatten(1).norm(dim=1)[:, None, None]
    torch.testing.assert_close(conv.weight, expect, rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        wav = model.decode(torch.randn(1, 128, 3))
    assert wav.shape == (1, 1, 3 * 512)
    assert wav.abs().max() <= 1.0 and torch.isfinite(wav).all()


def _legacy_weight_norm(module: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.nn.utils.weight_norm(module)


def test_weight_norm_convs_match_torch_legacy_weight_norm():
    torch.manual_seed(1)
    ref_conv = _legacy_weight_norm(nn.Conv1d(6, 5, 7, dilation=3, padding=9))
    with torch.no_grad():
        ref_conv.weight_g.mul_(torch.linspace(0.5, 2.0, 5)[:, None, None])
    ours = WNConv1d(6, 5, 7, dilation=3, padding=9)
    assert ours.load_state_dict(ref_conv.state_dict(), strict=True).missing_keys == []
    x = torch.randn(2, 6, 40)
    torch.testing.assert_close(ours(x), ref_conv(x), rtol=1e-5, atol=1e-6)

    ref_up = _legacy_weight_norm(nn.ConvTranspose1d(8, 4, 8, stride=4, padding=2))
    with torch.no_grad():
        ref_up.weight_g.mul_(torch.linspace(0.5, 2.0, 8)[:, None, None])
    ours_up = WNConvTranspose1d(8, 4, 8, stride=4, padding=2)
    assert {k: tuple(v.shape) for k, v in ours_up.state_dict().items()} == {
        "bias": (4,), "weight_g": (8, 1, 1), "weight_v": (8, 4, 8)}
    ours_up.load_state_dict(ref_up.state_dict(), strict=True)
    x = torch.randn(2, 8, 11)
    y = ours_up(x)
    assert y.shape == (2, 4, 44)  # transposed conv upsamples exactly x stride
    torch.testing.assert_close(y, ref_up(x), rtol=1e-5, atol=1e-6)


def test_tiny_vocoder_shapes_and_strict_reload():
    torch.manual_seed(0)
    model = ADaMoSHiFiGANV1.from_config(vocoder_preset("tiny")).eval()
    other = ADaMoSHiFiGANV1.from_config(vocoder_preset("tiny"))  # initialised model, in-place strict load
    result = other.load_state_dict(model.state_dict(), strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    mel_in = torch.randn(3, 128, 10)
    wav = model.decode(mel_in)
    assert wav.shape == (3, 1, 5120)
    assert torch.equal(other.eval().decode(mel_in), wav)
    mel = model.encode(torch.randn(2, 1, 4096))
    assert mel.shape == (2, 128, 8)


# ----------------------------------------------------------------------------- mel front end


def test_slaney_mel_scale_values():
    assert float(hz_to_mel_slaney(1000.0)) == pytest.approx(15.0)
    assert float(hz_to_mel_slaney(200.0)) == pytest.approx(3.0)
    assert float(hz_to_mel_slaney(6400.0)) == pytest.approx(42.0)  # 27 log-steps of 6.4^(1/27) above 1 kHz
    f = np.array([40.0, 500.0, 999.0, 1000.0, 4321.0, 16000.0])
    np.testing.assert_allclose(mel_to_hz_slaney(hz_to_mel_slaney(f)), f, rtol=1e-12)


def test_filterbank_shape_positivity_order_and_slaney_area():
    fb = slaney_mel_filterbank(1025, 44100, 128, 40.0, 16000.0)
    assert fb.shape == (1025, 128)
    assert (fb >= 0).all()
    assert (fb.max(axis=0) > 0).all()  # every filter sees at least one FFT bin
    peaks = fb.argmax(axis=0)
    assert (np.diff(peaks) >= 0).all() and peaks[-1] > peaks[0]
    assert (np.diff(peaks[40:]) > 0).all()  # strictly increasing once filters are wider than a bin
    pts = slaney_mel_points(128, 40.0, 16000.0)
    assert pts[0] == pytest.approx(40.0) and pts[-1] == pytest.approx(16000.0)
    height = 2.0 / (pts[2:] - pts[:-2])  # Slaney normalisation: unit-area triangles
    assert (fb.max(axis=0) <= height * (1 + 1e-9)).all()
    bin_hz = 22050.0 / 1024
    area = fb.sum(axis=0) * bin_hz
    wide = (pts[2:] - pts[:-2]) > 8 * bin_hz  # Riemann sums are only accurate over several FFT bins
    assert wide.sum() > 50
    np.testing.assert_allclose(area[wide], 1.0, atol=0.01)
    # exact triangle value at an arbitrary bin
    m, k = 100, int(round(pts[101] / bin_hz)) + 3
    f = k * bin_hz
    tri = min((f - pts[m]) / (pts[m + 1] - pts[m]), (pts[m + 2] - f) / (pts[m + 2] - pts[m + 1]))
    assert fb[k, m] == pytest.approx(max(tri, 0.0) * height[m], rel=1e-9)


def test_log_mel_frames_and_buffers():
    mel = LogMelSpectrogram()
    assert tuple(mel.mel_scale.fb.shape) == (1025, 128) and mel.mel_scale.fb.dtype == torch.float32
    assert torch.equal(mel.spectrogram.window, torch.hann_window(2048))
    assert set(mel.state_dict()) == {"spectrogram.window", "mel_scale.fb"}
    for n in (4096, 512 * 37):
        out = mel(torch.randn(2, 3, n) * 0.1)
        assert out.shape == (2, 3, 128, n // 512)
        assert mel.spectrogram.num_frames(n) == n // 512


def test_linear_spectrogram_matches_direct_dft():
    mel = LogMelSpectrogram()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(512 * 12, generator=g, dtype=torch.float64).float()
    mag = mel.spectrogram(x)  # (1025, 12)
    xn = x.double().numpy()
    padded = np.pad(xn, (768, 768), mode="reflect")
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(2048) / 2048)  # periodic Hann
    for frame in (0, 5, 11):
        seg = padded[frame * 512 : frame * 512 + 2048] * win
        spec = np.fft.rfft(seg)
        expect = np.sqrt(spec.real**2 + spec.imag**2 + 1e-6)
        np.testing.assert_allclose(mag[:, frame].double().numpy(), expect, rtol=1e-4, atol=1e-3)


def test_log_mel_of_1khz_sine_peaks_in_the_1khz_filter():
    sr, f0 = 44100, 1000.0
    t = torch.arange(512 * 40, dtype=torch.float64) / sr
    x = (0.5 * torch.sin(2 * math.pi * f0 * t)).float()
    out = LogMelSpectrogram()(x)  # (128, 40)
    pts = slaney_mel_points(128, 40.0, 16000.0)
    tri = np.maximum(0, np.minimum((f0 - pts[:-2]) / (pts[1:-1] - pts[:-2]), (pts[2:] - f0) / (pts[2:] - pts[1:-1])))
    expected_bin = int(np.argmax(tri * 2.0 / (pts[2:] - pts[:-2])))
    assert pts[expected_bin] < f0 < pts[expected_bin + 2]
    assert int(out[:, 5:-5].mean(dim=1).argmax()) == expected_bin
    assert float(out.min()) >= math.log(1e-5) - 1e-6  # log floor


# ----------------------------------------------------------------------------- resampler


def test_resampled_lengths():
    assert resampled_length(144000, 48000, 44100) == 132300
    assert resampled_length(1001, 48000, 44100) == math.ceil(1001 * 147 / 160)
    assert resampled_length(132300, 44100, 48000) == 144000
    for n in (1, 159, 160, 161, 4999):
        assert resample(torch.zeros(2, 3, n), 48000, 44100).shape == (2, 3, math.ceil(n * 147 / 160))
    x = torch.randn(5)
    assert resample(x, 16000, 16000) is x


def test_resample_440hz_sine_48k_to_44k1_and_back():
    t = torch.arange(48000, dtype=torch.float64) / 48000
    x = torch.sin(2 * math.pi * 440.0 * t + 0.3).float()
    y = resample(x, 48000, 44100)
    assert y.shape == (44100,) and y.dtype == torch.float32
    ty = torch.arange(44100, dtype=torch.float64) / 44100
    expect = torch.sin(2 * math.pi * 440.0 * ty + 0.3)
    err = (y.double() - expect).abs()[300:-300]
    assert float(err.max()) < 1e-2
    back = resample(y, 44100, 48000)
    assert back.shape == (48000,)
    assert float((back.double() - x.double()).abs()[400:-400].max()) < 1e-2


def _gain(freq: float, **kw) -> float:
    t = torch.arange(48000, dtype=torch.float64) / 48000
    z = resample(torch.sin(2 * math.pi * freq * t), 48000, 44100, **kw)
    return float(z[600:-600].abs().max())


def test_resample_dc_gain_and_frequency_response():
    y = resample(torch.ones(4800), 48000, 44100)
    assert float((y[200:-200] - 1).abs().max()) < 2e-3
    # default filter (6 zero crossings, rolloff 0.99, the torchaudio default ACE-Step uses): flat up to the mel
    # f_max of 16 kHz, a wide transition band around the 21.8 kHz cutoff
    assert abs(_gain(1000.0) - 1) < 2e-3
    assert _gain(16000.0) > 0.99
    assert 0.3 < _gain(23500.0) < 0.5
    # a longer kernel sharpens the transition: the same tone above the 22.05 kHz Nyquist is removed
    assert _gain(23500.0, lowpass_filter_width=64) < 0.05
    assert _gain(16000.0, lowpass_filter_width=64) > 0.99
