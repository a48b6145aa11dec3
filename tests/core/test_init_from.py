"""model.init_from: a 2-stage chain on tiny ACE-Step (the example presets), kinds across LoRA/full, bad paths."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from audiotrain.config.validate import ConfigError, training_plan_problems
from audiotrain.errors import UserError
from audiotrain.lora.from_config import settings_from_cfg
from audiotrain.models.state_dict import StateDictMismatch
from audiotrain.plugins import registry
from audiotrain.train.init_from import InitFromError
from audiotrain.train.run import train
from audiotrain.train.trainable import apply_training_plan
from tests.conftest import NO_SIGNAL_HANDLERS

FAST = ("trainer.max_steps=4", "trainer.every_n_train_steps=4", "dataset.max_duration=4")


def built(cfg):
    """The backbone as run.py builds it (LoRA attached), then the training plan applied."""
    from audiotrain.lora import adapter as lora_adapter

    backbone = registry.get("acestep").build_backbone(cfg)
    settings = settings_from_cfg(cfg.lora, backbone.default_lora_targets)
    if settings is not None:
        backbone.release_unused_weights(settings.target_modules)
        lora_adapter.attach(backbone.adapter_root(), settings)
    else:
        for p in backbone.adapter_root().parameters():
            p.requires_grad_(True)
    return backbone, apply_training_plan(backbone, cfg, settings)


@pytest.fixture(scope="module")
def stage1(tmp_path_factory, song_dir):
    """Stage 1 of the example chain, shortened: LoRA on attention only."""
    from tests.conftest import compose

    tmp = tmp_path_factory.mktemp("stage1")
    cfg = compose(["model=acestep", "experiment=acestep_stage1", f"data={song_dir}", "tracking=none",
                   "trainer.progress_bar=false", NO_SIGNAL_HANDLERS, f"cache_dir={tmp / 'cache'}",
                   f"paths.log_dir={tmp / 'logs'}", f"paths.run_dir={tmp / 'logs' / 'acestep_stage1' / 'run1'}", *FAST])
    return tmp, train(cfg)


def stage2_cfg(tmp: Path, song_dir, *extra):
    from tests.conftest import compose

    return compose(["model=acestep", "experiment=acestep_stage2", f"data={song_dir}", "tracking=none",
                    "trainer.progress_bar=false", NO_SIGNAL_HANDLERS, f"cache_dir={tmp / 'cache'}",
                    f"paths.log_dir={tmp / 'logs'}", f"paths.run_dir={tmp / 'logs' / 'acestep_stage2' / 'run1'}",
                    *FAST, *extra])


def test_stage2_starts_from_exactly_stage1s_final_weights_at_step_0(stage1, song_dir):
    tmp, s1 = stage1
    final = load_file(f"{s1['adapter_dir']}/peft/adapter_model.safetensors")
    cfg = stage2_cfg(tmp, song_dir)
    assert str(cfg.model.init_from) == str(tmp / "logs" / "acestep_stage1")  # the experiment folder: newest run
    from audiotrain.lora.adapter import adapter_state

    backbone, plan = built(cfg)
    start = adapter_state(backbone.adapter_root())
    assert start.keys() == {k.removeprefix("base_model.model.") for k in final}
    for k, v in final.items():
        assert torch.equal(start[k.removeprefix("base_model.model.")], v), k
    assert plan.init_from == str(Path(s1["adapter_dir"]) / "peft") and plan.loaded == len(final)
    # freeze: block 0's adapters are frozen, block 1's train (4 targets x 2 attentions x (A + B) per block)
    lora = [(n, p) for n, p in backbone.adapter_root().named_parameters() if "lora_" in n]
    assert len(lora) == 32
    assert all(p.requires_grad == (not n.startswith("transformer_blocks.0.")) for n, p in lora)
    assert plan.groups["default"][0] == sum(p.numel() for n, p in lora if not n.startswith("transformer_blocks.0."))

    s2 = train(cfg)
    assert s2["steps"] == 4 and s2["train_fixed_loss"][0][0] == 0  # a new run: step 0, its own run directory
    assert s2["run_dir"] != s1["run_dir"]
    # the same fixed-noise eval loss at stage 1's end and stage 2's start: the very same weights
    assert s2["train_fixed_loss"][0][1] == pytest.approx(s1["train_fixed_loss"][-1][1], rel=1e-6, abs=1e-7)
    end = load_file(f"{s2['adapter_dir']}/peft/adapter_model.safetensors")
    for k, v in final.items():
        same = torch.equal(end[k], v)
        assert same == (".transformer_blocks.0." in k), k  # frozen ones stay, the others moved
    ckpt = torch.load(f"{s2['run_dir']}/checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 4


def test_full_finetune_from_a_lora_run_merges_it_and_back(stage1, song_dir, tmp_path):
    tmp, s1 = stage1
    cfg = stage2_cfg(tmp, song_dir, "lora=none", "model.freeze=[lyric_encoder]",
                     f"model.init_from={s1['run_dir']}")
    full, plan = built(cfg)
    assert plan.groups["default"][1] == sum(p.numel() for n, p in full.adapter_root().named_parameters()
                                            if n.startswith("lyric_encoder."))
    assert all(p.requires_grad != n.startswith("lyric_encoder.") for n, p in full.adapter_root().named_parameters())
    # the merged base gives what stage 1's base + adapter gave: compare one attention output
    lora_cfg = stage2_cfg(tmp, song_dir, "model.freeze=[]", f"model.init_from={s1['run_dir']}")
    with_adapter, _ = built(lora_cfg)
    x = torch.randn(3, 32)
    a = with_adapter.adapter_root().transformer_blocks[1].attn.to_q(x)
    b = full.adapter_root().transformer_blocks[1].attn.to_q(x)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # full weights into a LoRA run: they become the base under a fresh adapter
    weights = tmp_path / "merged.safetensors"
    save_file({k: v.detach().contiguous() for k, v in full.adapter_root().state_dict().items()}, str(weights))
    onto, plan2 = built(stage2_cfg(tmp, song_dir, "model.freeze=[]", f"model.init_from={weights}"))
    assert plan2.loaded == len(full.adapter_root().state_dict()) - sum(
        1 for k in full.adapter_root().state_dict() if ".add_" in k or "to_add_out" in k)  # released ones skipped
    torch.testing.assert_close(onto.adapter_root().transformer_blocks[1].attn.to_q(x), b, rtol=1e-5, atol=1e-6)


def test_a_lightning_checkpoint_is_read_with_weights_only(stage1, song_dir):
    tmp, s1 = stage1
    ckpt = Path(s1["run_dir"]) / "checkpoints" / "last.ckpt"
    final = load_file(f"{s1['adapter_dir']}/peft/adapter_model.safetensors")
    from audiotrain.lora.adapter import adapter_state

    backbone, plan = built(stage2_cfg(tmp, song_dir, "model.freeze=[]", f"model.init_from={ckpt}"))
    start = adapter_state(backbone.adapter_root())
    assert all(torch.equal(start[k.removeprefix("base_model.model.")], v) for k, v in final.items())
    with pytest.raises(InitFromError, match="LoRA-only checkpoint and this run is a full fine-tune"):
        built(stage2_cfg(tmp, song_dir, "lora=none", "model.freeze=[]", f"model.init_from={ckpt}"))


def test_mismatched_sources_are_one_sentence(stage1, song_dir, tmp_path):
    """The core's strict-load sentence (audiotrain.models.state_dict), with init_from as source and its fixes."""
    tmp, s1 = stage1
    peft = f"model.init_from={s1['adapter_dir']}/peft"
    with pytest.raises(StateDictMismatch) as e:
        built(stage2_cfg(tmp, song_dir, "model.freeze=[]", "lora.target_modules=[to_q,to_k,to_v,to_out.0,final_layer.linear]"))
    assert str(e.value) == (f"{peft} does not match this run's LoRA adapter: 2 missing keys (e.g. "
                            f"final_layer.linear.lora_A.weight, final_layer.linear.lora_B.weight); use the earlier "
                            f"run's lora.target_modules (to_k, to_out.0, to_q, to_v) here.")
    with pytest.raises(StateDictMismatch) as e:
        built(stage2_cfg(tmp, song_dir, "model.freeze=[]", "lora.r=4"))
    assert str(e.value) == (f"{peft} is a LoRA of rank 8, this run's lora.r=4: set lora.r=8 (and the lora.alpha it "
                            f"was trained with) or pass an adapter of rank 4.")
    odd = tmp_path / "other.safetensors"
    save_file({"not_a_layer.weight": torch.zeros(2)}, str(odd))
    full, _ = built(stage2_cfg(tmp, song_dir, "lora=none", "model.freeze=[]", f"model.init_from={s1['adapter_dir']}"))
    kept = sorted(full.adapter_root().state_dict())  # what a full fine-tune of this model keeps (released ones not)
    with pytest.raises(StateDictMismatch) as e:
        built(stage2_cfg(tmp, song_dir, "lora=none", "model.freeze=[]", f"model.init_from={odd}"))
    assert str(e.value) == (f"model.init_from={odd} does not match this run's model: {len(kept)} missing keys (e.g. "
                            f"{', '.join(kept[:3])}, ...); 1 unexpected keys (e.g. not_a_layer.weight); it was saved "
                            f"from another model or preset; give weights of the same model.preset.")
    assert isinstance(e.value, UserError) and "\n" not in str(e.value)


def test_bad_init_from_paths_are_one_sentence(tmp_path, tiny_cfg):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "unfinished" / "adapters" / "step_10").mkdir(parents=True)
    (tmp_path / "empty").mkdir()
    cases = {
        tmp_path / "missing": "does not exist: give an earlier run's directory",
        tmp_path / "notes.txt": "is a .txt file: give a .safetensors or Lightning .ckpt weights file",
        tmp_path / "unfinished": "has no adapters/final (the run did not finish)",
        tmp_path / "empty": "holds no weights: give an earlier run's directory",
    }
    for path, words in cases.items():
        problems = training_plan_problems(tiny_cfg(f"model.init_from={path}"), None)
        assert len(problems) == 1 and words in problems[0] and str(path) in problems[0], problems
        assert "\n" not in problems[0]
    bad_ckpt = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "obj": object.__new__(json.JSONDecoder)}, bad_ckpt)
    with pytest.raises(UserError, match=r"pickled.ckpt holds pickled Python code \(json.decoder.JSONDecoder\) that "
                                        r"loading would run, so it was not opened.*trust_pickle=true"):
        built(tiny_cfg(f"model.init_from={bad_ckpt}"))
    with pytest.raises(ConfigError, match="model.init_from=.*missing does not exist"):
        train(tiny_cfg(f"model.init_from={tmp_path / 'missing'}"))
