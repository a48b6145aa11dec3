"""TorToiSe's mel front end: frame counts (255995 → 1000, 44000 → 172), the filterbank against the slaney and HTK
formulas written out here (librosa, the usual reference, is not installed in this environment), one frame against a
hand-computed DFT, the log floor, and the Griffin-Lim inverse."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from audiotrain_tortoise.mel import MelSpectrogram, hz_to_mel, mel_filterbank, mel_to_hz, num_frames


def test_frame_counts():
    mel = MelSpectrogram()
    assert mel(torch.zeros(1, 255995)).shape == (1, 80, 1000) and num_frames(255995) == 1000
    assert mel(torch.zeros(3, 1, 44000)).shape == (3, 80, 172) and num_frames(44000) == 172
    assert torch.allclose(mel(torch.zeros(1, 44000)), torch.full((1, 80, 172), math.log(1e-5)))  # the log floor


def _slaney_mel(f: float) -> float:
    return f / (200 / 3) if f < 1000 else 15 + math.log(f / 1000) / (math.log(6.4) / 27)


def _slaney_hz(m: float) -> float:
    return m * (200 / 3) if m < 15 else 1000 * math.exp((m - 15) * math.log(6.4) / 27)


def _htk_mel(f: float) -> float:
    return 2595 * math.log10(1 + f / 700)


def _htk_hz(m: float) -> float:
    return 700 * (10 ** (m / 2595) - 1)


def _reference_bank(to_mel, to_hz, sr=22050, n_fft=1024, n_mels=80, fmin=0.0, fmax=8000.0) -> np.ndarray:
    """Triangles between mel-spaced edges over the FFT bin frequencies, each scaled by 2 / (upper − lower edge)."""
    lo, hi = to_mel(fmin), to_mel(fmax)
    edges = [to_hz(lo + (hi - lo) * i / (n_mels + 1)) for i in range(n_mels + 2)]
    bins = [sr / 2 * k / (n_fft // 2) for k in range(n_fft // 2 + 1)]
    out = np.zeros((n_fft // 2 + 1, n_mels))
    for m in range(n_mels):
        left, centre, right = edges[m], edges[m + 1], edges[m + 2]
        for k, f in enumerate(bins):
            if left < f < right:
                up = (f - left) / (centre - left)
                down = (right - f) / (right - centre)
                out[k, m] = min(up, down) * 2 / (right - left)
    return out


@pytest.mark.parametrize("scale, to_mel, to_hz", [("slaney", _slaney_mel, _slaney_hz), ("htk", _htk_mel, _htk_hz)])
def test_filterbank_against_the_formula(scale, to_mel, to_hz):
    ours = mel_filterbank(mel_scale=scale).double().numpy()
    ref = _reference_bank(to_mel, to_hz)
    assert ours.shape == (513, 80)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-8)
    for f in (0.0, 440.0, 999.0, 1000.0, 1001.0, 7999.0):
        assert float(hz_to_mel(torch.tensor(f), scale)) == pytest.approx(to_mel(f), rel=1e-9, abs=1e-9)
        assert float(mel_to_hz(hz_to_mel(torch.tensor(f), scale), scale)) == pytest.approx(f, abs=1e-6)
    assert (ours.sum(0) > 0).all()  # every band catches at least one bin


def test_the_default_scale_is_torchaudios_htk():
    assert MelSpectrogram().mel_scale == "htk"
    assert not torch.allclose(mel_filterbank(), mel_filterbank(mel_scale="slaney"))


def test_one_frame_against_a_hand_computed_dft():
    torch.manual_seed(0)
    wav = torch.randn(3000, dtype=torch.float64)
    padded = np.pad(wav.numpy(), 512, mode="reflect")  # centre=True, reflect
    n = np.arange(1024)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / 1024)  # periodic Hann
    fb = mel_filterbank().double().numpy()
    front = MelSpectrogram()
    got = front.power_mel(wav.float()[None])[0].double().numpy()
    for t in (0, 5, 11):
        frame = padded[t * 256: t * 256 + 1024] * window
        k = np.arange(513)[:, None]
        spec = (frame[None, :] * np.exp(-2j * np.pi * k * n[None, :] / 1024)).sum(1)
        np.testing.assert_allclose(got[:, t], (np.abs(spec) ** 2) @ fb, rtol=2e-4, atol=1e-6)
    assert torch.allclose(front(wav.float()[None]), torch.log(torch.tensor(got).clamp(min=1e-5)).float()[None],
                          atol=1e-4)


def test_griffin_lim_inverts_a_tone():
    front = MelSpectrogram(torch.linspace(1, 2, 80))
    t = torch.arange(22050) / 22050
    wav = (0.5 * torch.sin(2 * math.pi * 440 * t) + 0.3 * torch.sin(2 * math.pi * 1250 * t * (1 + t)))[None]
    mel = front(wav)
    target = front._stft(wav).abs()

    def distance(back: torch.Tensor) -> float:  # spectral convergence against the original wave
        return float((front._stft(back).abs() - target).norm() / target.norm())

    back = front.invert(mel, iterations=16)
    assert back.shape == (1, (mel.size(-1) - 1) * 256) and torch.isfinite(back).all()
    again = front(back)
    same = (again[0, :, 10:-10].argmax(0) == mel[0, :, 10:-10].argmax(0)).float().mean()
    assert same > 0.9  # the loudest band, frame by frame
    assert distance(back) < 0.6 < distance(front.invert(mel, iterations=0))  # the iterations find consistent phases
