"""Flow-matching facts and loading the original four-folder checkpoint layout from local disk."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from audiotrain_acestep import checkpoint, flow
from audiotrain_acestep.presets import PRESETS
from audiotrain_acestep.transformer import ACEStepTransformer2DModel


def test_shifted_schedule_values():
    s = flow.shifted_sigmas(1000, 3.0)
    assert s.shape == (1000,) and s[0] == 1.0
    base = (1000 - 10) / 1000
    assert s[10].item() == pytest.approx(3 * base / (1 + 2 * base), rel=1e-6)
    assert torch.all(s[1:] < s[:-1])
    assert flow.shifted_sigmas(1000, 1.0)[500].item() == pytest.approx(0.5)


def test_logit_normal_index_is_centred():
    s = flow.shifted_sigmas(1000, 1.0)
    g = torch.Generator().manual_seed(0)
    sig = flow.sample_sigma(20000, s, 0.0, 1.0, g)
    assert sig.median().item() == pytest.approx(0.5, abs=0.02)
    assert 0 < sig.min() and sig.max() <= 1


def test_x0_loss_is_sigma_squared_weighted_velocity_mse():
    g = torch.Generator().manual_seed(0)
    x0, eps, v = (torch.randn(2, 8, 16, 6, generator=g) for _ in range(3))
    sigma = torch.tensor([0.3, 0.9])
    xt = flow.noisy(x0, sigma, eps)
    loss = flow.x0_mse(xt, v, x0, sigma, None)
    target_v = eps - x0
    by_velocity = ((sigma.view(2, 1, 1, 1) ** 2) * (v - target_v) ** 2).mean()
    assert loss.item() == pytest.approx(by_velocity.item(), rel=1e-5)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1.0]])
    masked = flow.x0_mse(xt, v, x0, sigma, mask)
    err = (xt - sigma.view(2, 1, 1, 1) * v - x0) ** 2
    manual = (err[0, ..., :3].sum() + err[1].sum()) / (8 * 16 * 9)
    assert masked.item() == pytest.approx(manual.item(), rel=1e-5)


def write_release_layout(root, model, config):
    for sub in checkpoint.SUBDIRS:
        (root / sub).mkdir(parents=True)
    folder = root / "ace_step_transformer"
    (folder / "config.json").write_text(json.dumps({"_class_name": "ACEStepTransformer2DModel", **config}))
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()},
              str(folder / "diffusion_pytorch_model.safetensors"))


def test_loader_reads_the_release_layout(tmp_path):
    torch.manual_seed(0)
    cfg = dict(PRESETS["tiny"])
    model = ACEStepTransformer2DModel(cfg).to(torch.bfloat16).float()
    write_release_layout(tmp_path, model, cfg)
    loaded = checkpoint.load_transformer(checkpoint.locate(str(tmp_path)))
    assert set(loaded.state_dict()) == set(model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_weights_are_found_in_the_hf_cache(tmp_path, monkeypatch):
    snap = tmp_path / checkpoint.HF_REPO_FOLDER / "snapshots" / "abc123"
    for sub in checkpoint.SUBDIRS:
        (snap / sub).mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert checkpoint.locate(None) == snap


def test_missing_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(checkpoint.WeightsNotFound) as e:
        checkpoint.locate(None)
    msg = str(e.value)
    assert "model.checkpoint_dir=DIR" in msg and "model.preset=tiny" in msg and "umt5-base/" in msg
    (tmp_path / "partial" / "umt5-base").mkdir(parents=True)
    with pytest.raises(checkpoint.WeightsNotFound, match="lacks music_dcae_f8c8/"):
        checkpoint.locate(str(tmp_path / "partial"))
