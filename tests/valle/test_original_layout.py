"""VALL-E files in the layout the original (e-c-k-e-r/vall-e) reads (issue 15, points 1-2).

``fp32.sft``/``.pth``: the tensors under the plain state-dict names of the reference list, the config and the
symmap as the original reads them (each safetensors metadata entry one JSON string). ``lora.sft``: its
``config`` holds only the fields of the original's LoRA dataclass; audiotrain's own settings ride beside it.
Older audiotrain files (``module.`` tensor names, dropout/target_modules inside the LoRA config) still load.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from audiotrain.lora import adapter as lora_adapter
from audiotrain.lora.adapter import LoRASettings
from audiotrain_valle import adapter_format
from audiotrain_valle.ar_nar import ARNAR, LORA_TARGETS
from audiotrain_valle.checkpoint import export_blob, load_exported, save_exported, sft_metadata
from audiotrain_valle.presets import get_preset, resolve_config, to_original_config
from tests.ref_keys import ref_keys

SYMMAP = {"<unk>": 0, "<bos>": 1, "</eos>": 2, "ə": 17, "ˈa": 40}

# The original's Model and ModelExperimentalSettings fields (spec valle.md §1.1): its --model path builds
# Model(**config | {path, attention, training, teacher}).
MODEL_FIELDS = {"name", "version", "size", "tasks", "langs", "tones", "experts", "arch_type", "training", "teacher",
                "frozen_params", "attention", "dropout", "path", "loss_factors", "capabilities", "kwargs",
                "experimental"}
EXPERIMENTAL_FIELDS = {"rvq_levels_p", "rvq_level_range", "audio_embedding_sums", "split_classifiers",
                       "unified_position_ids", "noncausal_masks", "classifiers_bias", "ignore_inputs_for_loss",
                       "max_position_embeddings", "causal_size", "masking_train_p", "masking_ratio",
                       "masking_train_rvq_levels", "cfg_cond_dropout_p", "cfg_prom_dropout_p", "use_raw_text_p"}


@dataclasses.dataclass
class OriginalLoRA:
    """The original's LoRA dataclass as its --lora path builds it: exactly these fields (spec valle.md §1.2)."""
    name: str = "lora"
    rank: int = 128
    alpha: int = 128
    training: bool = True
    embeddings: bool = False
    parametrize: bool = False
    rvq_levels: list = dataclasses.field(default_factory=list)
    path: str | None = None


def original_read(path: Path) -> dict:
    """What the original's loader makes of a file: a ``.sft``'s tensors under ``module`` and each metadata entry
    JSON-decoded once (left as text when it is not JSON); a ``.pth`` as its dict."""
    if path.suffix == ".pth":
        return torch.load(path, weights_only=True)
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = dict(f.metadata() or {})
    for k, v in meta.items():
        try:
            meta[k] = json.loads(v)
        except ValueError:
            pass
    return {"module": tensors, **meta}


def _tiny(seed: int) -> ARNAR:
    torch.manual_seed(seed)
    return ARNAR("tiny").eval()


def test_full_preset_export_has_exactly_the_reference_keys_and_an_original_config():
    ref = ref_keys("valle_ar_nar_full")
    with torch.device("meta"):
        model = ARNAR("full")
    blob = export_blob(model, SYMMAP, stats={"global_step": 3})
    assert set(blob) == {"module", "stats", "userdata", "config"}
    assert {k: list(v.shape) for k, v in blob["module"].items()} == ref["keys"]
    assert list(blob["module"]) == list(ref["keys"]) and len(blob["module"]) == 155
    assert "classifiers.proj.0.weight" in blob["module"] and not any(k.startswith("module.") for k in blob["module"])
    meta = sft_metadata(blob)
    assert set(meta) == {"stats", "userdata", "config"} and all(isinstance(v, str) for v in meta.values())
    config = json.loads(meta["config"])  # decoded once, as the original does
    assert set(config) <= MODEL_FIELDS and set(config["experimental"]) <= EXPERIMENTAL_FIELDS
    assert resolve_config(config) == get_preset("full")
    assert json.loads(meta["userdata"]) == {"symmap": SYMMAP} and json.loads(meta["stats"]) == {"global_step": 3}


@pytest.mark.parametrize("suffix", [".sft", ".pth"])
def test_tiny_export_is_read_by_the_original_loader_and_round_trips_bit_exact(tmp_path, suffix):
    model = _tiny(seed=11)
    path = save_exported(model, tmp_path / f"fp32{suffix}", SYMMAP, stats={"global_step": 5})
    seen = original_read(path)
    state = model.state_dict()
    assert list(seen["module"]) == list(state) if suffix == ".pth" else set(seen["module"]) == set(state)
    assert all(torch.equal(seen["module"][k], v) for k, v in state.items())
    assert seen["userdata"]["symmap"] == SYMMAP and seen["stats"] == {"global_step": 5}
    assert seen["config"] == to_original_config(model.config) and resolve_config(seen["config"]) == model.config
    loaded, symmap, _ = load_exported(path)
    assert symmap == SYMMAP and loaded.config == model.config
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())


def test_older_export_with_module_prefixed_keys_still_loads(tmp_path):
    model = _tiny(seed=12)
    state = model.state_dict()
    meta = {"config": json.dumps(to_original_config(model.config)), "userdata": json.dumps({"symmap": SYMMAP}),
            "stats": json.dumps({})}
    save_file({f"module.{k}": v.contiguous() for k, v in state.items()}, str(tmp_path / "old.sft"), metadata=meta)
    loaded, symmap, _ = load_exported(tmp_path / "old.sft")
    assert symmap == SYMMAP and all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())


def test_merge_writes_fp32_sft_in_the_original_layout(tmp_path):
    from audiotrain_valle.backbone import VALLEBackbone
    from audiotrain_valle.phonemes import Symmap
    from audiotrain_valle.plugin import PLUGIN

    model = _tiny(seed=13)
    cfg = OmegaConf.create({"model": {"weights": None}})
    path = PLUGIN.save_merged(VALLEBackbone(model, {}), cfg, tmp_path / "merged")
    assert path == tmp_path / "merged" / "fp32.sft"
    seen = original_read(path)
    assert set(seen["module"]) == set(model.state_dict()) and seen["userdata"]["symmap"] == Symmap.builtin().to_dict()
    # a run that fine-tuned released weights keeps their symmap
    save_exported(model, tmp_path / "base.sft", SYMMAP)
    cfg = OmegaConf.create({"model": {"weights": str(tmp_path / "base.sft")}})
    again = PLUGIN.save_merged(VALLEBackbone(model, {}), cfg, tmp_path / "merged2")
    assert original_read(again)["userdata"]["symmap"] == SYMMAP


def _adapted(settings: LoRASettings, seed: int) -> tuple[ARNAR, dict[str, torch.Tensor]]:
    model = _tiny(seed=seed)
    lora_adapter.attach(model, settings)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g))
    return model, {k: v.clone() for k, v in lora_adapter.adapter_state(model).items()}


@pytest.mark.parametrize("rslora", [False, True])
def test_lora_sft_config_builds_the_originals_dataclass_and_round_trips(tmp_path, rslora):
    settings = LoRASettings(r=4, alpha=12.0, dropout=0.05, target_modules=["self_attn.q_proj", "mlp.down_proj"],
                            use_rslora=rslora)
    model, state = _adapted(settings, seed=14)
    path = adapter_format.save(model, settings, tmp_path / "valle")
    seen = original_read(path)
    config = seen["config"]
    assert set(config) <= set(adapter_format.ORIGINAL_FIELDS)
    lora = OriginalLoRA(**(config | {"path": str(path)}))  # no TypeError
    assert lora.rank == 4 and lora.alpha / lora.rank == pytest.approx(settings.scale, rel=1e-12)
    assert set(seen["module"]) == {k[: -len(".weight")] for k in state}
    assert "model.layers.0.self_attn.q_proj.lora_A" in seen["module"]
    assert seen["audiotrain"]["dropout"] == 0.05 and seen["audiotrain"]["use_rslora"] is rslora
    back, back_state = adapter_format.load(path)
    assert back == settings
    assert set(back_state) == set(state) and all(torch.equal(back_state[k], v) for k, v in state.items())


def test_older_lora_sft_with_dropout_and_targets_in_its_config_still_loads(tmp_path):
    settings = LoRASettings(r=4, alpha=8.0, dropout=0.2, target_modules=["self_attn.v_proj"])
    model, state = _adapted(settings, seed=15)
    old = {"name": "lora", "rank": 4, "alpha": 8.0, "training": True, "embeddings": False, "parametrize": False,
           "rvq_levels": [], "path": None, "dropout": 0.2, "target_modules": ["self_attn.v_proj"]}
    with pytest.raises(TypeError):  # why the layout changed: the original cannot build its LoRA from this
        OriginalLoRA(**old)
    (tmp_path / "old").mkdir()
    save_file({k[: -len(".weight")]: v.contiguous() for k, v in state.items()}, str(tmp_path / "old" / "lora.sft"),
              metadata={"format": "pt", "config": json.dumps(old)})
    back, back_state = adapter_format.load(tmp_path / "old")
    assert back == settings and all(torch.equal(back_state[k], v) for k, v in state.items())


def test_original_lora_sft_without_audiotrain_entry_gets_the_originals_defaults(tmp_path):
    settings = LoRASettings(r=4, alpha=4.0, dropout=0.1, target_modules=list(LORA_TARGETS))
    model, state = _adapted(settings, seed=16)
    (tmp_path / "orig").mkdir()
    config = {"name": "lora", "rank": 4, "alpha": 4, "training": True, "embeddings": False, "parametrize": False,
              "rvq_levels": []}
    save_file({k[: -len(".weight")]: v.contiguous() for k, v in state.items()}, str(tmp_path / "orig" / "lora.sft"),
              metadata={"config": json.dumps(config)})
    back, back_state = adapter_format.load(tmp_path / "orig" / "lora.sft")
    assert (back.r, back.alpha, back.dropout, back.use_rslora) == (4, 4.0, 0.1, False)
    assert sorted(back.target_modules) == sorted(LORA_TARGETS)
    assert set(load_file(str(tmp_path / "orig" / "lora.sft"))) == {k[: -len(".weight")] for k in state}


def test_lora_sft_with_a_broken_audiotrain_entry_is_one_sentence(tmp_path):
    from audiotrain.safe_files import BadFileError

    settings = LoRASettings(r=4, alpha=4.0, dropout=0.1, target_modules=list(LORA_TARGETS))
    model, state = _adapted(settings, seed=17)
    path = adapter_format.save(model, settings, tmp_path / "valle")
    tensors = load_file(str(path))
    save_file(tensors, str(path), metadata={"config": json.dumps(adapter_format.original_config(settings)),
                                            "audiotrain": "[1, 2"})
    with pytest.raises(BadFileError) as e:
        adapter_format.load(path, option="lora.init_from")
    assert "'audiotrain' entry" in str(e.value) and "lora.init_from=" in str(e.value) and "\n" not in str(e.value)


def test_targets_other_than_the_originals_policy_are_named_once():
    from audiotrain_valle.adapter_format import targets_note

    assert targets_note(LoRASettings(r=4, alpha=4.0, target_modules=list(LORA_TARGETS))) is None
    assert targets_note(LoRASettings(r=4, alpha=4.0, target_modules=[t.split(".")[-1] for t in LORA_TARGETS])) is None
    note = targets_note(LoRASettings(r=4, alpha=4.0, target_modules=["q_proj", "k_proj", "v_proj"]))
    assert note.startswith("lora.target_modules (k_proj, q_proj, v_proj) differs from vall-e's own LoRA policy")
    assert "weights for k_proj are ignored there" in note and "down_proj, gate_proj, o_proj, up_proj get a LoRA" in note
