"""Weights files from strangers, core side (issue 13, points 1-2): ``model.init_from``, PEFT adapter folders,
native adapter files, feature-cache entries and the ``merge`` / ``export`` commands. Every one is read as data: a
malicious pickle never runs (its marker file never appears) and is refused with a sentence naming the file and
``trust_pickle=true``; every other kind of wrong file is one sentence naming the file."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from audiotrain.errors import UserError
from audiotrain.lora import adapter as lora
from audiotrain.lora.native_format import NativeFormat, settings_from_shapes
from audiotrain.models.state_dict import StateDictMismatch
from audiotrain.safe_files import UnsafeFileError
from audiotrain.train import init_from
from tests.core.conftest import cli_env
from tests.weight_files import KINDS, SAYS, assert_sentence, malicious, wrong_file


class Net(nn.Module):
    def __init__(self, d: int = 6):
        super().__init__()
        self.q = nn.Linear(d, d)
        self.v = nn.Linear(d, d)

    def forward(self, x):
        return self.q(x) + self.v(x)


def adapted(r: int = 4, seed: int = 0) -> tuple[Net, lora.LoRASettings]:
    torch.manual_seed(seed)
    settings = lora.LoRASettings(r=r, alpha=r, target_modules=["q", "v"])
    net = lora.attach(Net(), settings)
    with torch.no_grad():
        for n, p in net.named_parameters():
            if "lora_B" in n:
                p.normal_()
    return net, settings


@pytest.fixture
def marker(tmp_path) -> Path:
    m = tmp_path / "MARKER"
    yield m
    assert not m.exists(), "code from a weights file ran"


# ---- model.init_from ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".ckpt", ".safetensors"])
@pytest.mark.parametrize("kind", ["empty", "truncated", "text", "malicious"])
def test_init_from_wrong_files_are_one_sentence(tmp_path, marker, kind, suffix):
    good = tmp_path / f"good{suffix}"
    if suffix == ".ckpt":
        torch.save({"state_dict": {"backbone.q.weight": torch.zeros(6, 6)}, "global_step": 3}, str(good))
    else:
        save_file({"q.weight": torch.zeros(6, 6)}, str(good))
    path = wrong_file(kind, tmp_path / f"wrong{suffix}", good, marker)
    with pytest.raises(UserError) as e:
        init_from.read(path)
    pickle_as_safetensors = kind == "malicious" and suffix == ".safetensors"
    assert_sentence(str(e.value), f"model.init_from={path}",
                    "is a PyTorch pickle (torch.save), not a safetensors file" if pickle_as_safetensors else SAYS[kind])
    if kind == "malicious" and not pickle_as_safetensors:
        assert isinstance(e.value, UnsafeFileError)


@pytest.mark.parametrize("kind,says", [("missing", "does not exist"), ("folder", "holds no weights")])
def test_init_from_missing_or_empty_folder(tmp_path, kind, says):
    path = wrong_file(kind, tmp_path / "weights.ckpt")
    with pytest.raises(UserError) as e:
        init_from.read(path)
    assert_sentence(str(e.value), f"model.init_from={path}", says)


def test_init_from_a_pytorch_file_that_is_no_checkpoint(tmp_path):
    torch.save([torch.zeros(2)], str(tmp_path / "list.ckpt"))
    with pytest.raises(UserError) as e:
        init_from.read(tmp_path / "list.ckpt")
    assert str(e.value) == (f"model.init_from={tmp_path / 'list.ckpt'} is a PyTorch file but not a Lightning checkpoint "
                            f"(it has no state_dict): give a .ckpt from a run's checkpoints/ folder.")


def test_trust_pickle_is_the_only_way_a_pickle_is_unpickled(tmp_path):
    """The opt-in is plumbed through (and does what it says, which is why it is off by default)."""
    marker = tmp_path / "MARKER"
    path = malicious(tmp_path / "own.ckpt", marker)
    with pytest.raises(UnsafeFileError):
        init_from.read(path)
    assert not marker.exists()
    src = init_from.read(path, trust_pickle=True)
    assert marker.exists() and src.kind == "ckpt" and list(src.state) == ["w"]


def test_init_from_an_adapter_of_another_rank_or_model(tmp_path):
    net8, s8 = adapted(r=8)
    lora.save_peft(net8, s8, tmp_path / "r8", base_model="toy:small")
    net4, s4 = adapted(r=4)
    with pytest.raises(StateDictMismatch) as e:
        init_from.load(tmp_path / "r8", net4, s4)
    assert str(e.value) == (f"model.init_from={tmp_path / 'r8'} is a LoRA of rank 8, this run's lora.r=4: set lora.r=8 "
                            f"(and the lora.alpha it was trained with) or pass an adapter of rank 4.")
    with pytest.raises(StateDictMismatch) as e:
        init_from.load(tmp_path / "r8", adapted(r=8)[0], s8, model=("other", "small"))
    assert str(e.value) == (f"model.init_from={tmp_path / 'r8'} is a LoRA of the toy model (preset small), not of "
                            f"other: pass an adapter trained with model=other.")
    with pytest.raises(StateDictMismatch) as e:
        init_from.load(tmp_path / "r8", adapted(r=8)[0], s8, model=("toy", "big"))
    assert str(e.value) == (f"model.init_from={tmp_path / 'r8'} is a LoRA of toy at model.preset=small, this run's "
                            f"model.preset=big: use model.preset=small or an adapter trained at model.preset=big.")
    src, n = init_from.load(tmp_path / "r8", adapted(r=8, seed=1)[0], s8, model=("toy", "small"))
    assert n == 4 and src.kind == "lora"  # the right model, preset and rank: loaded


# ---- PEFT adapter folders ----------------------------------------------------------------------------------------
@pytest.fixture
def peft_dir(tmp_path) -> Path:
    net, s = adapted()
    return lora.save_peft(net, s, tmp_path / "peft", base_model="toy:small")


@pytest.mark.parametrize("kind", KINDS)
def test_peft_folder_with_a_wrong_weights_file(peft_dir, tmp_path, marker, kind):
    weights = peft_dir / "adapter_model.safetensors"
    good = tmp_path / "good.safetensors"
    weights.rename(good)
    wrong_file(kind, weights, good, marker)
    with pytest.raises(UserError) as e:
        lora.load_peft(peft_dir)
    says = {"missing": "lacks adapter_model.safetensors", "folder": "lacks adapter_model.safetensors",
            "malicious": "is a PyTorch pickle (torch.save), not a safetensors file"}.get(kind, SAYS[kind])
    assert_sentence(str(e.value), peft_dir, says)


def test_peft_folder_wrong_paths_and_configs(peft_dir, tmp_path):
    cases = {}
    cases[tmp_path / "nothing"] = "no such folder"
    cases[peft_dir / "adapter_model.safetensors"] = "is a file, not a folder"
    bad_json = tmp_path / "bad_json"
    bad_json.mkdir()
    (bad_json / "adapter_model.safetensors").write_bytes((peft_dir / "adapter_model.safetensors").read_bytes())
    (bad_json / "adapter_config.json").write_text("{not json")
    cases[bad_json] = "is not valid JSON"
    ia3 = tmp_path / "ia3"
    ia3.mkdir()
    (ia3 / "adapter_model.safetensors").write_bytes((peft_dir / "adapter_model.safetensors").read_bytes())
    (ia3 / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
    cases[ia3] = "is a PEFT IA3 adapter, not a LoRA"
    full = tmp_path / "full"
    full.mkdir()
    (full / "adapter_config.json").write_text((peft_dir / "adapter_config.json").read_text())
    save_file({"q.weight": torch.zeros(6, 6)}, str(full / "adapter_model.safetensors"))
    cases[full] = "holds no LoRA weights"
    for path, says in cases.items():
        with pytest.raises(UserError) as e:
            lora.load_peft(path)
        assert_sentence(str(e.value), path, says)


def test_load_adapter_state_uses_the_state_dict_sentence(peft_dir):
    _, state = lora.load_peft(peft_dir)
    net8, _ = adapted(r=8)
    with pytest.raises(StateDictMismatch) as e:
        lora.load_adapter_state(net8, state, "adapters/final/peft")
    assert str(e.value).startswith("adapters/final/peft does not match this model's LoRA adapter: 4 shape mismatches "
                                   "(file vs model, e.g. q.lora_A.weight [4, 6] vs [8, 6], q.lora_B.weight [6, 4] vs "
                                   "[6, 8], v.lora_A.weight [4, 6] vs [8, 6], ...); give an adapter trained for this "
                                   "model")
    only_q = lora.attach(Net(), lora.LoRASettings(r=4, alpha=4, target_modules=["q"]))
    with pytest.raises(StateDictMismatch, match=r"2 unexpected keys \(e.g. v.lora_A.weight, v.lora_B.weight\)"):
        lora.load_adapter_state(only_q, state)


# ---- native adapter files ----------------------------------------------------------------------------------------
NATIVE = NativeFormat(filename="lora.sft", expected="a toy lora.sft / lora.pth", metadata_key="config",
                      encode=lora.LoRASettings.to_json, decode=lora.LoRASettings.from_json, drop_suffix=".weight",
                      pth_state_keys=("module", "lora"), infer=settings_from_shapes)


@pytest.mark.parametrize("suffix", [".sft", ".pth"])
@pytest.mark.parametrize("kind", ["empty", "truncated", "text", "malicious"])
def test_native_adapter_wrong_files(tmp_path, marker, kind, suffix):
    net, s = adapted()
    good = NATIVE.save(net, s, tmp_path / "good")
    if suffix == ".pth":
        from safetensors.torch import load_file

        torch.save({"module": load_file(str(good)), "config": s.to_json()}, str(tmp_path / "good.pth"))
        good = tmp_path / "good.pth"
    path = wrong_file(kind, tmp_path / f"lora{suffix}", good, marker)
    with pytest.raises(UserError) as e:
        NATIVE.load(path, option="lora")
    says = "is a PyTorch pickle" if kind == "malicious" and suffix == ".sft" else SAYS[kind]
    assert_sentence(str(e.value), f"lora={path}", says)


def test_native_adapter_missing_or_not_a_lora(tmp_path):
    with pytest.raises(UserError) as e:
        NATIVE.load(tmp_path)
    assert str(e.value) == f"{tmp_path / 'lora.sft'} does not exist: give a toy lora.sft / lora.pth."
    save_file({"q.weight": torch.zeros(6, 6)}, str(tmp_path / "lora.sft"))
    with pytest.raises(UserError) as e:
        NATIVE.load(tmp_path / "lora.sft")
    assert str(e.value) == (f"{tmp_path / 'lora.sft'} holds no LoRA weights (no lora_A / lora_B tensors); give a toy "
                            f"lora.sft / lora.pth.")
    net, s = adapted()
    from safetensors.torch import load_file

    save_file(load_file(str(NATIVE.save(net, s, tmp_path / "ok"))), str(tmp_path / "odd.sft"),
              metadata={"config": "{broken"})
    with pytest.raises(UserError, match="carries a LoRA config that is not valid JSON"):
        NATIVE.load(tmp_path / "odd.sft")
    settings, state = NATIVE.load(tmp_path / "ok")
    assert settings == s and len(state) == 4


# ---- feature cache -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["empty", "truncated", "text"])
def test_a_damaged_cache_entry_is_noted_and_recomputed(tmp_path, damage):
    from audiotrain.data.cache import FeatureCache
    from audiotrain.data.dataset import AudioDataset
    from audiotrain.data.manifest import Manifest
    from audiotrain.data.prepare import prepare_items
    from audiotrain.data.report import BadInputReport
    from tests.core.tiny_streams import TinyStreams, write_tone

    plugin = TinyStreams()
    files = {"mix": write_tone(tmp_path / "mix.wav", 16000, 1.0, [1.0, 0.5]),
             "vocal": write_tone(tmp_path / "vocal.wav", 8000, 1.0, [1.0])}
    rows = [{"key": "s1", "audio": {r: str(p) for r, p in files.items()}, "text": "la"}]
    cache = FeatureCache(tmp_path / "cache", "tiny")

    def prepared():
        report = BadInputReport()
        toks = plugin.build_encoders(None)
        items = prepare_items(Manifest(rows), plugin, plugin.audio_streams(None), toks, cache, report)
        return items, toks, report

    items, toks, _ = prepared()
    mix = next(t for t in toks if t.name == "rms-mix")
    entry = cache.path(mix.name, mix.cache_key(), items[0].entries[mix.name])
    want = cache.load(mix.name, mix.cache_key(), items[0].entries[mix.name])["mix_rms"].clone()

    def damaged(kind: str) -> None:  # a new file in its place (a tensor read earlier may still map the old one)
        data = entry.read_bytes()
        entry.unlink()
        entry.write_bytes({"empty": b"", "truncated": data[:-7], "text": b"not features\n"}[kind])

    damaged(damage)
    assert cache.damage(mix.name, mix.cache_key(), items[0].entries[mix.name])

    items, toks, report = prepared()
    assert {t.name: t.calls for t in toks}["rms-mix"] == 1  # re-computed, the others read from the cache
    assert [p for p, _ in report.notes] == [str(files["mix"])]
    assert "its cached 'rms-mix' features were" in report.notes[0][1] and "re-computed" in report.notes[0][1]
    assert cache.damage(mix.name, mix.cache_key(), items[0].entries[mix.name]) is None
    assert torch.equal(cache.load(mix.name, mix.cache_key(), items[0].entries[mix.name])["mix_rms"], want)

    # damaged after preparation (while training): never trusted, computed again from the audio
    damaged("truncated")
    feats = AudioDataset(items, plugin, plugin.audio_streams(None), toks, cache)[0]["features"]
    assert torch.equal(feats["mix_rms"], want) and cache.damage(mix.name, mix.cache_key(), items[0].entries[mix.name]) is None


# ---- audiotrain merge / export -------------------------------------------------------------------------------------
def _run_dir(root: Path, cfg, plugin_name: str = "acestep") -> Path:
    """A finished run's directory as run.py leaves it (config.yaml, adapters/final/{peft, <plugin>}), without
    training: the tiny model's LoRA with random B."""
    from omegaconf import OmegaConf

    from audiotrain.lora.from_config import settings_from_cfg
    from audiotrain.plugins import registry

    plugin = registry.get(plugin_name)
    backbone = plugin.build_backbone(cfg)
    settings = settings_from_cfg(cfg.lora, backbone.default_lora_targets)
    root.mkdir(parents=True)
    lora.attach(backbone.adapter_root(), settings)
    lora.save_peft(backbone.adapter_root(), settings, root / "adapters" / "final" / "peft",
                   base_model=f"{plugin_name}:{cfg.model.preset}")
    plugin.save_adapter_native(backbone.adapter_root(), settings, root / "adapters" / "final" / plugin_name)
    (root / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.to_container(cfg, resolve=True)))
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory, song_dir):
    """A tiny ACE-Step run directory and a copy of it whose adapter is a VALL-E one."""
    import shutil

    from tests.conftest import compose

    tmp = tmp_path_factory.mktemp("runs")
    ace = _run_dir(tmp / "ace", compose(["model=acestep", f"data={song_dir}", "model.preset=tiny", "lora.r=4"]))
    valle = _run_dir(tmp / "valle", compose(["model=valle", "data=.", "model.preset=tiny", "lora.r=4"]), "valle")
    other = tmp / "ace_with_valle_adapter"
    shutil.copytree(ace, other)
    shutil.rmtree(other / "adapters" / "final" / "peft")
    shutil.copytree(valle / "adapters" / "final" / "peft", other / "adapters" / "final" / "peft")
    return {"ace": ace, "valle": valle, "other": other, "tmp": tmp}


def _variant(runs, name: str) -> Path:
    """A copy of the ACE-Step run directory broken one way."""
    import shutil

    d = runs["tmp"] / name
    if d.exists():
        return d
    shutil.copytree(runs["ace"], d)
    weights = d / "adapters" / "final" / "peft" / "adapter_model.safetensors"
    if name == "no_adapters":
        shutil.rmtree(d / "adapters")
    elif name == "truncated":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif name == "malicious":
        malicious(weights, runs["tmp"] / "MARKER")
    return d


CLI_CASES = {
    "no_adapters": "holds no adapter 'final'",
    "truncated": "adapter_model.safetensors is a truncated or damaged safetensors file",
    "malicious": "adapter_model.safetensors is a PyTorch pickle (torch.save), not a safetensors file",
    "other": "is a LoRA of the valle model (preset tiny), not of acestep: pass an adapter trained with model=acestep",
}


@pytest.mark.parametrize("command", ["merge", "export"])
@pytest.mark.parametrize("case", list(CLI_CASES))
def test_merge_and_export_refuse_wrong_adapters_with_one_sentence(runs, command, case, capsys, tmp_path):
    from audiotrain.cli.main import main

    run = runs["other"] if case == "other" else _variant(runs, case)
    assert main([command, str(run), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"audiotrain {command}: ") and err.count("\n") == 1, err
    assert_sentence(err, CLI_CASES[case])
    assert not (tmp_path / "out").exists() and not (runs["tmp"] / "MARKER").exists()


def test_export_reads_the_native_file_too(runs, tmp_path, capsys):
    """VALL-E's native lora.pth swapped for a malicious pickle: refused (with the --trust-pickle hint)."""
    import shutil

    from audiotrain.cli.main import main

    run = tmp_path / "valle_run"
    shutil.copytree(runs["valle"], run)
    malicious(run / "adapters" / "final" / "valle" / "lora.pth", tmp_path / "MARKER")
    assert main(["export", str(run), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert_sentence(err, run / "adapters" / "final" / "valle" / "lora.pth", "trust_pickle=true")
    assert not (tmp_path / "MARKER").exists()
    assert main(["export", str(runs["valle"]), "--out", str(tmp_path / "ok")]) == 0  # the intact one exports
    assert (tmp_path / "ok" / "valle" / "lora.sft").is_file()


def _cli(cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "audiotrain.cli.main", *argv], cwd=cwd, env=cli_env(cwd),
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("command", ["merge", "export"])
def test_the_real_cli_refuses_a_malicious_adapter(runs, command, tmp_path):
    run = _variant(runs, "malicious")
    out = _cli(tmp_path, command, str(run), "--out", str(tmp_path / "out"))
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stdout + out.stderr
    assert_sentence(out.stderr.strip(), run / "adapters" / "final" / "peft" / "adapter_model.safetensors",
                    "not a safetensors file")
    assert not (runs["tmp"] / "MARKER").exists() and not (tmp_path / "out").exists()


def test_the_real_training_cli_refuses_a_malicious_init_from(tmp_path, song_dir):
    marker = tmp_path / "MARKER"
    evil = malicious(tmp_path / "evil.ckpt", marker)
    out = _cli(tmp_path, "model=acestep", f"data={song_dir}", "model.preset=tiny", "tracking=none",
               "trainer.max_steps=1", "trainer.progress_bar=false", "trainer.stdin_control=false",
               "dataset.num_workers=0", f"paths.log_dir={tmp_path / 'logs'}", f"model.init_from={evil}")
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stdout + out.stderr
    assert f"model.init_from={evil} holds pickled Python code" in out.stdout + out.stderr
    assert "trust_pickle=true" in out.stdout + out.stderr and not marker.exists()
