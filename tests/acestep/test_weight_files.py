"""ACE-Step's weights files from strangers (issue 13, points 1-2): ``model.checkpoint_dir`` (its transformer, DC-AE
and vocoder safetensors, the UMT5 folder, config.json files), the lyric vocabulary, speaker embeddings and the REPA
teachers' weights. Read as data: a malicious pickle never runs and is refused naming ``trust_pickle=true``; every
other wrong file or folder is one sentence naming it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from audiotrain.errors import UserError
from audiotrain_acestep import checkpoint as ckpt
from audiotrain_acestep.presets import PRESETS
from tests.weight_files import KINDS, SAYS, assert_sentence, malicious, wrong_file


@pytest.fixture
def marker(tmp_path) -> Path:
    m = tmp_path / "MARKER"
    yield m
    assert not m.exists(), "code from a weights file ran"


def _transformer_folder(root: Path, preset: dict | None = None, seed: int = 0) -> Path:
    """``root/ace_step_transformer`` as the release lays it out, for a (tiny) transformer config."""
    from audiotrain_acestep.transformer import ACEStepTransformer2DModel

    config = dict(preset or PRESETS["tiny"])
    torch.manual_seed(seed)
    model = ACEStepTransformer2DModel(config)
    folder = root / "ace_step_transformer"
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"_class_name": "ACEStepTransformer2DModel", **config}))
    for sub in ckpt.SUBDIRS:
        (root / sub).mkdir(exist_ok=True)
    return folder


# ---- model.checkpoint_dir ----------------------------------------------------------------------------------------
def test_checkpoint_dir_wrong_folders(tmp_path):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "valle_export").mkdir()
    cases = {
        tmp_path / "nowhere": "no such folder",
        tmp_path / "a_file": "is a file, not a folder",
        tmp_path / "valle_export": "lacks music_dcae_f8c8/, music_vocoder/, ace_step_transformer/, umt5-base/",
    }
    for path, says in cases.items():
        with pytest.raises(UserError) as e:
            ckpt.locate(str(path))
        assert_sentence(str(e.value), f"model.checkpoint_dir={path}", says)


@pytest.mark.parametrize("kind", KINDS)
def test_transformer_weights_wrong_files(tmp_path, marker, kind):
    folder = _transformer_folder(tmp_path)
    weights = folder / "diffusion_pytorch_model.safetensors"
    good = tmp_path / "good.safetensors"
    weights.rename(good)
    wrong_file(kind, weights, good, marker)
    with pytest.raises(UserError) as e:
        ckpt.load_transformer(ckpt.locate(str(tmp_path)))
    says = {"missing": "is missing", "folder": "is missing",
            "malicious": "is a PyTorch pickle (torch.save), not a safetensors file"}.get(kind, SAYS[kind])
    assert_sentence(str(e.value), weights, says)


def test_transformer_weights_of_another_preset_and_a_bad_config(tmp_path):
    folder = _transformer_folder(tmp_path, {**PRESETS["tiny"], "num_layers": 3})  # weights of a 3-block model
    (folder / "config.json").write_text(json.dumps(PRESETS["tiny"]))  # ... described as the 2-block one
    with pytest.raises(UserError) as e:
        ckpt.load_transformer(tmp_path)
    assert_sentence(str(e.value), folder / "diffusion_pytorch_model.safetensors",
                    "does not match the ACE-Step transformer its config.json describes", "unexpected keys",
                    "transformer_blocks.2.")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(UserError) as e:
        ckpt.load_transformer(tmp_path)
    assert_sentence(str(e.value), f"model.checkpoint_dir={folder / 'config.json'}", "is not valid JSON")
    good = _transformer_folder(tmp_path / "ok")
    assert sum(p.numel() for p in ckpt.load_transformer(tmp_path / "ok").parameters()) > 0 and good.is_dir()


@pytest.mark.parametrize("kind", ["truncated", "text", "malicious"])
def test_dcae_and_vocoder_weights_wrong_files(tmp_path, marker, kind):
    from audiotrain_acestep.music_dcae import WEIGHTS_NAME, MusicDCAE

    MusicDCAE.from_preset("tiny").save_pretrained(tmp_path / "music_dcae_f8c8", tmp_path / "music_vocoder")
    for sub in ("music_dcae_f8c8", "music_vocoder"):
        weights = tmp_path / sub / WEIGHTS_NAME
        good = tmp_path / f"{sub}.good"
        weights.rename(good)
        wrong_file(kind, weights, good, marker)
        with pytest.raises(UserError) as e:
            MusicDCAE.from_pretrained(tmp_path / "music_dcae_f8c8", tmp_path / "music_vocoder")
        says = "is a PyTorch pickle (torch.save), not a safetensors file" if kind == "malicious" else SAYS[kind]
        assert_sentence(str(e.value), weights, says)
        good.replace(weights)


# ---- umt5-base/ (a Hugging Face folder: local files, no remote code, .bin read as data) ----------------------------
@pytest.fixture(scope="module")
def umt5_dir(tmp_path_factory) -> Path:
    from audiotrain_acestep.text_encoder import TextEncoder

    d = tmp_path_factory.mktemp("umt5")
    TextEncoder.tiny(seed=0).save_pretrained(d)
    return d


def _copy(src: Path, to: Path, skip: tuple[str, ...] = ()) -> Path:
    to.mkdir()
    for f in src.iterdir():
        if f.is_file() and f.name not in skip:
            (to / f.name).write_bytes(f.read_bytes())
    return to


def test_umt5_folder_with_only_a_pickled_bin_loads_as_data(umt5_dir, tmp_path):
    from safetensors.torch import load_file

    from audiotrain_acestep.text_encoder import TextEncoder

    d = _copy(umt5_dir, tmp_path / "bin", skip=("model.safetensors",))
    torch.save(load_file(str(umt5_dir / "model.safetensors")), str(d / "pytorch_model.bin"))
    a, b = TextEncoder.from_dir(d), TextEncoder.from_dir(umt5_dir)
    h1, _ = a.encode_prompts(["rock, 120 bpm"])
    h2, _ = b.encode_prompts(["rock, 120 bpm"])
    assert torch.equal(h1, h2)


@pytest.mark.parametrize("case", ["truncated", "malicious_bin", "other_model", "foreign_weights"])
def test_umt5_folder_wrong_files(umt5_dir, tmp_path, marker, case):
    from audiotrain_acestep.text_encoder import TextEncoder

    d = _copy(umt5_dir, tmp_path / "umt5-base", skip=("model.safetensors",) if case == "malicious_bin" else ())
    says = {"truncated": "truncated", "malicious_bin": "trust_pickle=true",
            "other_model": "holds a encodec model (config.json model_type), not umt5",
            "foreign_weights": "does not fit the UMT5EncoderModel its config.json describes"}[case]
    if case == "truncated":
        data = (d / "model.safetensors").read_bytes()
        (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif case == "malicious_bin":
        malicious(d / "pytorch_model.bin", marker)
    elif case == "other_model":
        (d / "config.json").write_text(json.dumps({"model_type": "encodec"}))
    else:
        save_file({"not_umt5.weight": torch.zeros(2)}, str(d / "model.safetensors"))
    with pytest.raises(UserError) as e:
        TextEncoder.from_dir(d)
    assert_sentence(str(e.value), d, says)


def test_lyric_vocab_that_is_not_a_vocabulary(tmp_path):
    from audiotrain_acestep.lyric_tokenizer import LyricTokenizer

    for name, data in {"vocab.json": b"{ not json", "binary.json": b"\x80\x04\x95 pickle bytes"}.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UserError) as e:
            LyricTokenizer(tmp_path / name)
        assert_sentence(str(e.value), tmp_path / name, "is not a tokenizers vocab.json", "model.lyric_vocab_path")


# ---- speaker embeddings ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_speaker_embedding_wrong_files(tmp_path, marker, kind):
    from audiotrain_acestep.features import SpeakerFeature

    good = tmp_path / "good.pt"
    torch.save(torch.randn(16), str(good))
    path = wrong_file(kind, tmp_path / "spk.pt", good, marker)
    with pytest.raises(UserError) as e:
        SpeakerFeature(16).encode({"speaker_emb_path": str(path)})
    assert_sentence(str(e.value), f"speaker_emb_path={path}", SAYS[kind])


def test_speaker_embeddings_that_are_data(tmp_path):
    from audiotrain_acestep.features import SpeakerFeature

    emb = torch.randn(16)
    torch.save(emb, str(tmp_path / "a.pt"))
    save_file({"emb": emb}, str(tmp_path / "b.safetensors"))
    for f in ("a.pt", "b.safetensors"):
        assert torch.equal(SpeakerFeature(16).encode({"speaker_emb_path": str(tmp_path / f)})["speaker_emb"], emb)
    with pytest.raises(UserError) as e:
        SpeakerFeature(8).encode({"speaker_emb_path": str(tmp_path / "a.pt")})
    assert str(e.value) == (f"speaker_emb_path={tmp_path / 'a.pt'} has 16 values, the model expects 8; give a 8-value "
                            f"embedding of this model's speaker encoder.")


# ---- REPA teachers' weights --------------------------------------------------------------------------------------
def test_ssl_teacher_weights_are_read_as_data(tmp_path, marker):
    from audiotrain_acestep.ssl_teachers import MERT, check_weights

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "hubert"}))
    malicious(tmp_path / "pytorch_model.bin", marker)
    with pytest.raises(UserError) as e:
        check_weights(tmp_path, MERT)
    assert_sentence(str(e.value), f"model.ssl.mert_path={tmp_path / 'pytorch_model.bin'}", "trust_pickle=true")
    (tmp_path / "pytorch_model.bin").unlink()
    save_file({"w": torch.zeros(64)}, str(tmp_path / "model.safetensors"))
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[:-40])
    with pytest.raises(UserError) as e:
        check_weights(tmp_path, MERT)
    assert_sentence(str(e.value), "model.ssl.mert_path=", "truncated")
