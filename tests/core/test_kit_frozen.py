"""FrozenFeature: the module frozen and in eval mode, features computed without gradients, the lazy wrapper
that builds nothing until asked, and cache keys from config + weight-file fingerprints."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from safetensors.torch import save_file
from torch import nn

from audiotrain.encoders.frozen import FrozenFeature, weights_key
from audiotrain.encoders.lazy import LazyEncoder


class Projection(FrozenFeature):
    name = "proj"
    stream = "main"

    def features(self, example: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        self.grad_was_on = torch.is_grad_enabled()
        return {"proj": self.module(example["audio"].to(self.device)).cpu()}


def module() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5))


def test_frozen_eval_no_grad_and_deterministic():
    m = module().train()
    feat = Projection(m, "k1")
    assert feat.module is m and not m.training and not any(p.requires_grad for p in m.parameters())
    x = torch.randn(2, 4)
    a, b = feat.encode({"audio": x})["proj"], feat.encode({"audio": x})["proj"]
    assert feat.grad_was_on is False and not a.requires_grad
    assert torch.equal(a, b) and torch.equal(a, m[0](x).detach())  # dropout off: eval mode
    assert feat.cache_key() == "k1" and feat.device == torch.device("cpu") and feat.to("cpu") is feat


def test_lazy_builds_on_first_encode_only():
    built = []

    def build():
        built.append(1)
        return Projection(module(), "k")

    lazy = Projection.lazy("key-1", build)
    assert isinstance(lazy, LazyEncoder)
    assert (lazy.name, lazy.stream, lazy.cache_key(), lazy.loaded, built) == ("proj", "main", "key-1", False, [])
    out = lazy.encode({"audio": torch.ones(1, 4)})
    lazy.encode({"audio": torch.ones(1, 4)})
    assert built == [1] and out["proj"].shape == (1, 3)


def test_weights_key_follows_config_and_file_content(tmp_path):
    w = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(8)}, str(w))
    k = weights_key("enc", 24000, {"levels": 8}, files=[w])
    assert k == weights_key("enc", 24000, {"levels": 8}, files=[str(w)]) and len(k) == 16
    assert k != weights_key("enc", 16000, {"levels": 8}, files=[w])
    assert k != weights_key("other", 24000, {"levels": 8}, files=[w])
    save_file({"w": torch.ones(8)}, str(w))  # same size, other values
    assert k != weights_key("enc", 24000, {"levels": 8}, files=[w])
