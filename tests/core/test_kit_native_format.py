"""The core's native adapter-file codec on a small real model: bit-exact round trips, the exact header, the
config's fallbacks (header → sidecar JSON → shapes → codec defaults) and the missing-file sentence."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from torch import nn

from audiotrain.lora import adapter as lora
from audiotrain.lora.native_format import NativeFormat, settings_from_shapes


class Block(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.q = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, d), nn.GELU())

    def forward(self, x):
        return self.ff(self.q(x) * torch.sigmoid(self.v(x)))


class Net(nn.Module):
    def __init__(self, d: int = 6, n: int = 2):
        super().__init__()
        self.blocks = nn.ModuleList(Block(d) for _ in range(n))

    def forward(self, x):
        for b in self.blocks:
            x = x + b(x)
        return x


def make(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net().eval()


def adapted(settings: lora.LoRASettings) -> Net:
    model = lora.attach(make(), settings)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g))
    return model


def header_and_data(path: Path) -> tuple[dict, bytes]:
    """A safetensors file's JSON header and its tensor bytes (the metadata's key order is not fixed by the writer)."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def rank_codec(s: lora.LoRASettings) -> dict:
    return {"rank": s.r, "alpha": s.alpha, "dropout": s.dropout, "targets": list(s.target_modules)}


def from_rank_codec(c) -> lora.LoRASettings:
    return lora.LoRASettings(r=int(c.get("rank", 2)), alpha=float(c.get("alpha", 2)),
                             dropout=float(c.get("dropout", 0.0)), target_modules=list(c.get("targets") or ["q"]))


ORIGINAL = NativeFormat(filename="lora.sft", expected="a toy lora.sft", metadata_key="config", encode=rank_codec,
                        decode=from_rank_codec, drop_suffix=".weight", pth_state_keys=("module", "lora"))
PEFT_KEYED = NativeFormat(filename="weights.safetensors", expected="a toy LoRA folder",
                          metadata_key="lora_adapter_metadata", encode=lora.LoRASettings.to_json,
                          decode=lora.LoRASettings.from_json, sidecar="adapter_config.json",
                          sidecar_extra={"peft_type": "LORA"}, infer=settings_from_shapes)
SETTINGS = lora.LoRASettings(r=3, alpha=5.0, dropout=0.0, target_modules=["q", "ff.0"])


def test_original_names_round_trip_bit_exact(tmp_path):
    model = adapted(SETTINGS)
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)
    path = ORIGINAL.save(model, SETTINGS, tmp_path / "a")
    assert path == tmp_path / "a" / "lora.sft" and sorted(p.name for p in (tmp_path / "a").iterdir()) == ["lora.sft"]
    header, _ = header_and_data(path)
    assert header.pop("__metadata__") == {"format": "pt", "config": json.dumps(rank_codec(SETTINGS))}
    peft_keys = lora.adapter_state(model)
    assert sorted(header) == sorted(k[: -len(".weight")] for k in peft_keys)
    assert "blocks.1.ff.0.lora_B" in header and header["blocks.1.ff.0.lora_B"]["shape"] == [6, 3]
    settings, state = ORIGINAL.load(tmp_path / "a")
    assert settings == SETTINGS
    assert state.keys() == peft_keys.keys() and all(torch.equal(state[k], peft_keys[k]) for k in state)
    again = lora.attach(make(), settings)
    lora.load_adapter_state(again, state)
    with torch.no_grad():
        assert torch.equal(again(x), ref)
    # writing it again gives the same header and the same tensor bytes
    second = ORIGINAL.save(again, settings, tmp_path / "b")
    assert header_and_data(second) == header_and_data(path)


def test_pth_with_the_tensors_under_a_second_key(tmp_path):
    model = adapted(SETTINGS)
    path = ORIGINAL.save(model, SETTINGS, tmp_path / "a")
    from safetensors.torch import load_file

    torch.save({"lora": load_file(str(path)), "config": rank_codec(SETTINGS)}, str(tmp_path / "lora.pth"))
    settings, state = ORIGINAL.load(tmp_path / "lora.pth")
    assert settings == SETTINGS and state.keys() == lora.adapter_state(model).keys()
    torch.save({"lora": load_file(str(path))}, str(tmp_path / "bare.pth"))
    assert ORIGINAL.load(tmp_path / "bare.pth")[0] == lora.LoRASettings(r=2, alpha=2.0, target_modules=["q"])


def test_config_falls_back_from_header_to_sidecar_to_shapes(tmp_path):
    model = adapted(SETTINGS)
    path = PEFT_KEYED.save(model, SETTINGS, tmp_path)
    sidecar = json.loads((tmp_path / "adapter_config.json").read_text())
    assert sidecar == {**SETTINGS.to_json(), "peft_type": "LORA"}
    assert (tmp_path / "adapter_config.json").read_text() == json.dumps(sidecar, indent=2)
    header, _ = header_and_data(path)
    assert sorted(k for k in header if k != "__metadata__") == sorted(lora.adapter_state(model))  # PEFT's keys
    assert PEFT_KEYED.load(path)[0] == SETTINGS

    from safetensors.torch import load_file, save_file

    save_file(load_file(str(path)), str(path))  # no header config: the sidecar speaks
    assert PEFT_KEYED.load(tmp_path)[0] == SETTINGS
    (tmp_path / "adapter_config.json").unlink()  # neither: r from the shapes, alpha = r, the shortest target names
    assert PEFT_KEYED.load(tmp_path)[0] == lora.LoRASettings(r=3, alpha=3, target_modules=["ff.0", "q"])


def test_missing_file_is_one_sentence(tmp_path):
    with pytest.raises(lora.LoRAConfigError) as e:
        ORIGINAL.load(tmp_path)
    assert str(e.value) == f"{tmp_path / 'lora.sft'} does not exist: give a toy lora.sft."


def test_key_map_both_ways():
    assert ORIGINAL.to_native("m.q.lora_A.weight") == "m.q.lora_A" and ORIGINAL.to_peft("m.q.lora_A") == "m.q.lora_A.weight"
    assert ORIGINAL.to_peft("m.q.lora_A.weight") == "m.q.lora_A.weight"
    assert PEFT_KEYED.to_native("m.q.lora_A.weight") == PEFT_KEYED.to_peft("m.q.lora_A.weight") == "m.q.lora_A.weight"
