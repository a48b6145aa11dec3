"""TorToiSe weight files: the released key set (with GPT-2's 60 mask buffers) fits the release model; real files
of the tiny model load strictly whatever their wrapping (mask buffers, ``module.``, ``{'state_dict'}``, fp16);
``<step>_gpt.pth`` round-trips bit-exactly; pickled code, wrong files and mismatched weights are one sentence;
dvae.pth and mel_norms.pth load."""
from __future__ import annotations

import pytest
import torch

from audiotrain.models.presets import seeded
from audiotrain.models.state_dict import StateDictMismatch, compare
from audiotrain.safe_files import BadFileError, UnsafeFileError
from audiotrain_tortoise.checkpoint import (drop_mask_buffers, load_autoregressive, load_dvae, load_mel_norms,
                                            read_autoregressive_state, save_gpt)
from audiotrain_tortoise.dvae import DiscreteVAE, tiny_dvae
from audiotrain_tortoise.mel import MelSpectrogram
from audiotrain_tortoise.unified_voice import UnifiedVoice
from tests.ref_keys import ref_keys
from tests.weight_files import assert_sentence, malicious


@pytest.fixture(scope="module")
def tiny() -> UnifiedVoice:
    return seeded(lambda: UnifiedVoice("tiny"))


def _with_mask_buffers(state: dict, n: int) -> dict:
    """``state`` with GPT-2's mask buffers after each layer's ln_1, as transformers <= 4.30 saved them."""
    out = {}
    for k, v in state.items():
        out[k] = v
        if k.endswith(".ln_1.bias"):
            layer = k[: -len(".ln_1.bias")]
            out[f"{layer}.attn.bias"] = torch.tril(torch.ones(n, n, dtype=torch.bool)).view(1, 1, n, n)
            out[f"{layer}.attn.masked_bias"] = torch.tensor(-1e4)
    return out


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa)


def test_the_released_key_set_with_its_mask_buffers_fits_the_release_model():
    ref = ref_keys("tortoise_autoregressive")
    state = {k: torch.empty(shape, device="meta") for k, shape in ref["keys"].items()}
    kept, dropped = drop_mask_buffers(state)
    assert sorted(dropped) == sorted(ref["buffer_keys"]) and len(dropped) == 60
    with torch.device("meta"):
        model = UnifiedVoice("release")
    assert not compare(model, kept)  # no missing, unexpected or mis-shaped key


def test_files_with_mask_buffers_prefixes_and_wrappers_load(tiny, tmp_path):
    state = tiny.state_dict()
    files = {
        "buffers.pth": _with_mask_buffers(state, 1012),
        "module.pth": {f"module.{k}": v for k, v in state.items()},
        "wrapped.pth": {"state_dict": {f"module.{k}": v for k, v in _with_mask_buffers(state, 1012).items()}},
    }
    assert len(files["buffers.pth"]) == len(state) + 4  # 2 layers × (bias, masked_bias)
    for name, obj in files.items():
        torch.save(obj, tmp_path / name)
        loaded = load_autoregressive(tmp_path / name, "tiny")
        assert _same(loaded, tiny), name
        assert not loaded.training and all(p.requires_grad for p in loaded.parameters())
    half = tmp_path / "autoregressive_half.pth"
    torch.save({k: v.half() for k, v in state.items()}, half)
    loaded = load_autoregressive(half, "tiny")
    assert loaded.text_head.weight.dtype == torch.float32
    assert torch.equal(loaded.text_head.weight, tiny.text_head.weight.half().float())


def test_save_gpt_round_trips_bit_exactly(tiny, tmp_path):
    path = save_gpt(tiny, tmp_path / "models", 1500)
    assert path == tmp_path / "models" / "1500_gpt.pth"
    assert [p.name for p in path.parent.iterdir()] == ["1500_gpt.pth"]  # no temporary left
    raw = torch.load(path, weights_only=True)  # tensors only
    assert type(raw) is dict and list(raw) == list(tiny.state_dict())
    assert all(type(v) is torch.Tensor and v.device.type == "cpu" for v in raw.values())
    assert not compare(tiny, read_autoregressive_state(path))
    assert _same(load_autoregressive(path, "tiny"), tiny)


def test_pickled_code_is_refused(tmp_path):
    marker = tmp_path / "ran"
    evil = malicious(tmp_path / "autoregressive.pth", marker)
    with pytest.raises(UnsafeFileError) as err:
        load_autoregressive(evil, "tiny", option="model.autoregressive_path")
    assert not marker.exists()
    assert_sentence(str(err.value), "model.autoregressive_path", "autoregressive.pth", "trust_pickle=true")
    with pytest.raises(UnsafeFileError):
        load_dvae(evil, "tiny")
    assert not marker.exists()


def test_wrong_files_are_one_sentence(tiny, tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("not weights\n")
    with pytest.raises(BadFileError) as err:
        load_autoregressive(text, "tiny", option="model.autoregressive_path")
    assert_sentence(str(err.value), "model.autoregressive_path", "text file", "autoregressive.pth")
    torch.save({"step": 3}, tmp_path / "state.pth")
    with pytest.raises(BadFileError, match="is not a state dict"):
        load_autoregressive(tmp_path / "state.pth", "tiny")
    path = save_gpt(tiny, tmp_path, 1)
    with pytest.raises(StateDictMismatch) as err:
        load_autoregressive(path, "release")
    assert_sentence(str(err.value), "1_gpt.pth", "30 layers", "missing keys", "shape mismatches", "model.preset")
    state = tiny.state_dict()
    state.pop("mel_head.bias")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "edited.pth")
    with pytest.raises(StateDictMismatch, match="1 missing keys .*mel_head.bias.*1 unexpected keys .*extra.weight"):
        load_autoregressive(tmp_path / "edited.pth", "tiny")


def test_dvae_file_loads(tmp_path):
    dvae = tiny_dvae()
    torch.save({f"module.{k}": v for k, v in dvae.state_dict().items()}, tmp_path / "dvae.pth")
    loaded = load_dvae(tmp_path / "dvae.pth", "tiny")
    assert _same(loaded, dvae) and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    mel = torch.randn(1, 80, 100)
    assert torch.equal(loaded.codes(mel), dvae.codes(mel))
    with pytest.raises(StateDictMismatch, match="DiscreteVAE"):
        load_dvae(tmp_path / "dvae.pth", "release")


def test_dvae_release_keys_fit_on_meta():
    ref = ref_keys("tortoise_dvae")
    with torch.device("meta"):
        model = DiscreteVAE("release")
    assert not compare(model, {k: torch.empty(s, device="meta") for k, s in ref["keys"].items()})


def test_mel_norms(tmp_path):
    norms = torch.linspace(1.0, 3.0, 80)
    torch.save(norms, tmp_path / "mel_norms.pth")
    assert torch.equal(load_mel_norms(tmp_path / "mel_norms.pth"), norms)
    wav = torch.randn(1, 4000)
    plain, normed = MelSpectrogram()(wav), MelSpectrogram(tmp_path / "mel_norms.pth")(wav)
    assert torch.allclose(normed, plain / norms[None, :, None])
    torch.save(torch.ones(79), tmp_path / "short.pth")
    with pytest.raises(BadFileError) as err:
        load_mel_norms(tmp_path / "short.pth", option="model.mel_norms_path")
    assert_sentence(str(err.value), "model.mel_norms_path", "79 values", "80 floats")
