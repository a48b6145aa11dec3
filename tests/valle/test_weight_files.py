"""VALL-E's weights files from strangers (issue 13, points 1-2): ``model.weights`` (fp32.sft / fp32.pth) and the
EnCodec folder ``model.codec.path``. Read as data: a malicious pickle never runs and is refused naming
``trust_pickle=true``; every other wrong file or folder is one sentence naming the option and the path."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from audiotrain.errors import UserError
from audiotrain_valle.ar_nar import ARNAR
from audiotrain_valle.checkpoint import load_exported, read_exported, save_exported
from audiotrain_valle.codec import Codec
from tests.weight_files import SAYS, assert_sentence, malicious, wrong_file


@pytest.fixture
def marker(tmp_path) -> Path:
    m = tmp_path / "MARKER"
    yield m
    assert not m.exists(), "code from a weights file ran"


@pytest.fixture(scope="module")
def tiny_model() -> ARNAR:
    torch.manual_seed(0)
    return ARNAR("tiny")


# ---- model.weights -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".sft", ".pth"])
@pytest.mark.parametrize("kind", ["missing", "empty", "truncated", "text", "folder", "malicious"])
def test_model_weights_wrong_files(tmp_path, marker, tiny_model, kind, suffix):
    good = save_exported(tiny_model, tmp_path / f"good{suffix}", {"a": 5})
    path = wrong_file(kind, tmp_path / f"fp32{suffix}", good, marker)
    with pytest.raises(UserError) as e:
        load_exported(path)
    says = "is a PyTorch pickle (torch.save), not a safetensors file" if (kind, suffix) == ("malicious", ".sft") \
        else SAYS[kind]
    assert_sentence(str(e.value), f"model.weights={path}", says)


def test_model_weights_of_another_preset_or_not_an_export(tmp_path, tiny_model):
    path = save_exported(tiny_model, tmp_path / "fp32.sft", {})
    with pytest.raises(UserError) as e:
        load_exported(path, preset="quarter")
    assert str(e.value) == (f"model.weights={path} is a VALL-E model of another size than model.preset=quarter (file "
                            f"vs preset: audio_tokens 64 vs 1024, dim 32 vs 256, heads 2 vs 4, layers 2 vs 12): set "
                            f"model.preset to the preset it was trained at, or give weights of quarter.")
    model, _, _ = load_exported(path, preset="tiny")
    assert torch.equal(model.sep, tiny_model.sep)
    # a Lightning training checkpoint passed as model.weights
    ckpt = tmp_path / "last.pth"
    torch.save({"state_dict": {f"backbone.model.{k}": v for k, v in tiny_model.state_dict().items()},
                "global_step": 4}, str(ckpt))
    with pytest.raises(UserError) as e:
        read_exported(ckpt)
    assert_sentence(str(e.value), f"model.weights={ckpt}", "holds no VALL-E model weights", "model.init_from=")
    # weights of another model entirely (a safetensors file with foreign keys)
    from safetensors.torch import save_file

    save_file({"transformer_blocks.0.attn.to_q.weight": torch.zeros(2, 2)}, str(tmp_path / "other.sft"))
    with pytest.raises(UserError) as e:
        load_exported(tmp_path / "other.sft", config="tiny")
    assert_sentence(str(e.value), f"model.weights={tmp_path / 'other.sft'}", "does not match the VALL-E model",
                    "1 unexpected keys (e.g. transformer_blocks.0.attn.to_q.weight)")


def test_trust_pickle_reaches_model_weights(tmp_path, tiny_model):
    """The opt-in is plumbed: with it the pickle is unpickled (and its code runs), which is why it is off."""
    marker = tmp_path / "MARKER"
    path = tmp_path / "own.pth"
    torch.save({"module": tiny_model.state_dict(), "config": None, "note": __import__("tests.weight_files",
               fromlist=["Payload"]).Payload(marker)}, str(path))
    with pytest.raises(UserError, match="trust_pickle=true"):
        read_exported(path)
    assert not marker.exists()
    state, _, _, _ = read_exported(path, trust_pickle=True)
    assert marker.exists() and "sep" in state


# ---- model.codec.path --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def codec_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("encodec")
    Codec.tiny(seed=0).model.save_pretrained(str(d))
    assert (d / "model.safetensors").is_file() and (d / "config.json").is_file()
    return d


def _copy(codec_dir: Path, to: Path, skip: tuple[str, ...] = ()) -> Path:
    to.mkdir()
    for f in codec_dir.iterdir():
        if f.name not in skip:
            (to / f.name).write_bytes(f.read_bytes())
    return to


def test_codec_folder_with_only_a_pickled_bin_loads_as_data(codec_dir, tmp_path):
    from safetensors.torch import load_file

    d = _copy(codec_dir, tmp_path / "bin", skip=("model.safetensors",))
    torch.save(load_file(str(codec_dir / "model.safetensors")), str(d / "pytorch_model.bin"))
    codec = Codec.from_dir(d)
    ref = Codec.tiny(seed=0)
    wav = torch.randn(3200, generator=torch.Generator().manual_seed(1)) * 0.1
    assert torch.equal(codec.encode(wav), ref.encode(wav))


@pytest.mark.parametrize("case", ["missing", "file", "no_config", "bad_config", "truncated", "malicious_bin",
                                  "other_model", "text_weights"])
def test_codec_path_wrong_folders(codec_dir, tmp_path, marker, case):
    from audiotrain_valle.encoders import codec_frame_rate  # noqa: F401  (reads config.json the same way)

    d = tmp_path / "codec"
    says = {"missing": "no such folder", "file": "is a file, not a folder", "no_config": "lacks config.json",
            "bad_config": "is not valid JSON", "truncated": "truncated",
            "malicious_bin": "trust_pickle=true", "other_model": "holds a t5 model (config.json model_type), not encodec",
            "text_weights": "is a text file"}[case]
    if case == "file":
        d.write_text("x")
    elif case == "no_config":
        _copy(codec_dir, d, skip=("config.json",))
    elif case == "bad_config":
        _copy(codec_dir, d)
        (d / "config.json").write_text("{oops")
    elif case == "truncated":
        _copy(codec_dir, d)
        data = (d / "model.safetensors").read_bytes()
        (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif case == "malicious_bin":
        _copy(codec_dir, d, skip=("model.safetensors",))
        malicious(d / "pytorch_model.bin", marker)
    elif case == "other_model":
        _copy(codec_dir, d)
        (d / "config.json").write_text('{"model_type": "t5", "d_model": 8}')
    elif case == "text_weights":
        _copy(codec_dir, d)
        (d / "model.safetensors").write_text("not weights")
    with pytest.raises(UserError) as e:
        Codec.from_dir(d)
    assert_sentence(str(e.value), "model.codec.path=", says)
    assert str(d) in str(e.value)


# ---- the real CLI ------------------------------------------------------------------------------------------------
def test_the_real_cli_refuses_a_malicious_model_weights(tmp_path, voice_dir):
    from tests.core.conftest import cli_env

    marker = tmp_path / "MARKER"
    evil = malicious(tmp_path / "fp32.pth", marker)
    out = subprocess.run([sys.executable, "-m", "audiotrain.cli.main", "model=valle", f"data={voice_dir}",
                          "model.preset=tiny", "tracking=none", "trainer.max_steps=1", "trainer.progress_bar=false",
                          "trainer.stdin_control=false", "dataset.num_workers=0", f"paths.log_dir={tmp_path / 'logs'}",
                          f"model.weights={evil}"], cwd=tmp_path, env=cli_env(tmp_path), capture_output=True,
                         text=True, timeout=600)
    text = out.stdout + out.stderr
    assert out.returncode == 2, text[-2000:]
    assert "Traceback" not in text and f"model.weights={evil} holds pickled Python code" in text
    assert "trust_pickle=true" in text and not marker.exists()
