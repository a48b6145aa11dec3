"""What a training checkpoint is of, and the one sentence when it is not of this run's model.

Every checkpoint carries ``checkpoint["audiotrain"]["identity"]`` (written by ``TrainModule.on_save_checkpoint``):
the plugin, the preset, the adapter (LoRA ``r`` / ``alpha`` / rsLoRA / targets, or ``None`` for a full fine-tune)
and the audiotrain version. :func:`identity_problem` compares it with the run's config before anything is built;
for a checkpoint without it (written before it existed, or by hand) :func:`state_problem` compares the weights'
names and shapes with the model's once the model exists (``TrainModule.on_load_checkpoint``, ``mode=eval``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from omegaconf import OmegaConf

from audiotrain.errors import UserError

KEY = "identity"


class CheckpointMismatch(UserError):
    """A checkpoint of another plugin, preset or adapter than the run's."""


def _lora(cfg: Any) -> dict[str, Any] | None:
    from audiotrain.lora.from_config import settings_from_cfg

    lora = cfg.get("lora")
    if lora is None:
        return None
    s = settings_from_cfg(lora, [])
    if s is None:
        return None
    out = {"r": int(s.r), "alpha": float(s.alpha), "use_rslora": bool(s.use_rslora),
           "target_modules": sorted(map(str, s.target_modules)) or None}  # None: the plugin's default targets
    return out if s.algo == "lora" else {**out, "algo": s.algo}  # a LoRA's identity is as it was before LoKr


def identity(cfg: Any) -> dict[str, Any]:
    """The plugin, preset and adapter of the run ``cfg`` describes (what its checkpoints are of)."""
    from audiotrain import __version__

    preset = OmegaConf.select(cfg, "model.preset", default=None)
    if OmegaConf.is_config(preset):
        preset = OmegaConf.to_container(preset, resolve=True)
    return {"plugin": str(OmegaConf.select(cfg, "model.name")), "preset": preset if isinstance(preset, dict) else
            (None if preset is None else str(preset)), "lora": _lora(cfg), "audiotrain_version": __version__}


def source(cfg: Any, path: Path | str) -> tuple[str, str]:
    """How a sentence names the checkpoint (``ckpt_path=FILE``, or the file ``resume=auto`` found), and how to
    start fresh instead."""
    if cfg.get("ckpt_path"):
        return f"ckpt_path={path}", ("or evaluate the base model without ckpt_path" if cfg.get("mode") == "eval"
                                     else "or start fresh without ckpt_path")
    if cfg.get("resume") == "auto":
        return (f"{path} (the newest checkpoint of exp_name={cfg.get('exp_name')}, found by resume=auto)",
                "or start fresh with another exp_name")
    return f"{path} (this job's own checkpoint)", "or start afresh in another hydra.sweep.dir"


def _lora_text(lora: Mapping[str, Any] | None) -> str:
    return "lora=none" if lora is None else f"lora.r={lora['r']}"


def identity_problem(saved: Mapping[str, Any], cfg: Any, where: str, fresh: str) -> str | None:
    """The sentence when the checkpoint's identity ``saved`` is not the run's, else None."""
    own = identity(cfg)
    if saved.get("plugin") != own["plugin"]:
        return (f"{where} is a checkpoint of {saved.get('plugin')} (preset {saved.get('preset')}), not of "
                f"{own['plugin']}: pass a checkpoint this plugin wrote, or model={saved.get('plugin')}.")
    if saved.get("preset") != own["preset"]:
        return (f"{where} is a checkpoint of {own['plugin']} at model.preset={saved.get('preset')}, this run has "
                f"model.preset={own['preset']}: add model.preset={saved.get('preset')} ({fresh}).")
    mine, theirs = own["lora"], saved.get("lora")
    if (mine is None) != (theirs is None):
        if theirs is None:
            return (f"{where} is a full fine-tune (lora=none), this run trains a LoRA adapter ({_lora_text(mine)}): "
                    f"add lora=none ({fresh}).")
        return (f"{where} was trained with a LoRA adapter ({_lora_text(theirs)}), this run is a full fine-tune "
                f"(lora=none): drop lora=none and add {_lora_text(theirs)} ({fresh}).")
    if mine is None:
        return None
    algo_file, algo_run = theirs.get("algo", "lora"), mine.get("algo", "lora")  # no "algo": a LoRA checkpoint
    if algo_file != algo_run:
        group = {"lora": "lora=default", "lokr": "lora=lokr"}
        return (f"{where} was trained with a {algo_file} adapter ({group.get(algo_file, algo_file)}), this run trains "
                f"a {algo_run} adapter: add {group.get(algo_file, algo_file)} ({fresh}).")
    for key, name in (("r", "lora.r"), ("alpha", "lora.alpha"), ("use_rslora", "lora.use_rslora")):
        if theirs.get(key) != mine[key]:
            value = theirs.get(key)
            shown = f"{value:g}" if isinstance(value, float) else str(value).lower() if isinstance(value, bool) else value
            mine_shown = f"{mine[key]:g}" if isinstance(mine[key], float) else str(mine[key]).lower() \
                if isinstance(mine[key], bool) else mine[key]
            return (f"{where} was trained with {name}={shown}, this run has {name}={mine_shown}: add "
                    f"{name}={shown} ({fresh}).")
    t_file, t_run = theirs.get("target_modules"), mine["target_modules"]
    if t_file is not None and t_run is not None and list(t_file) != list(t_run):
        return (f"{where} was trained with LoRA on {', '.join(t_file)}, this run targets {', '.join(t_run)}: add "
                f"lora.target_modules=[{','.join(t_file)}] ({fresh}).")
    return None


def _rank(state: Mapping[str, Any]) -> int | None:
    for key, value in state.items():
        if "lora_A" in key and hasattr(value, "shape") and len(value.shape) >= 1:
            return int(value.shape[0])
    return None


def state_problem(state: Mapping[str, Any], model_state: Mapping[str, Any], trainable: set[str] | None, cfg: Any,
                  where: str, fresh: str) -> str | None:
    """For a checkpoint without identity: the sentence when its weights' names and shapes are not the model's,
    else None. ``model_state``: the module's whole state dict; ``trainable``: the names an adapter-only
    checkpoint holds (None for a full fine-tune, whose checkpoints hold everything)."""
    from audiotrain.models.state_dict import compare

    expected = model_state if trainable is None else {k: v for k, v in model_state.items() if k in trainable}
    found = compare(expected, state)
    if not found:
        return None
    own = identity(cfg)
    lora_file = any("lora_" in k for k in state)
    lora_model = any("lora_" in k for k in expected)
    if lora_model and not lora_file:
        return (f"{where} holds the full model's weights (a lora=none run), this run trains a LoRA adapter: add "
                f"lora=none ({fresh}).")
    if lora_file and not lora_model:
        return (f"{where} holds LoRA adapter weights, this run is a full fine-tune (lora=none): drop lora=none and "
                f"add the lora settings it was trained with ({fresh}).")
    if not set(state) & set(model_state):
        example = next(iter(sorted(state)), "nothing")
        return (f"{where} holds none of the weights of this run's model ({own['plugin']}, preset {own['preset']}; "
                f"the file has e.g. {example}): it is a checkpoint of another model: pass a checkpoint this run's "
                f"model.name and model.preset wrote ({fresh}).")
    r_file, r_model = _rank(state), _rank(expected)
    if r_file is not None and r_model is not None and r_file != r_model:
        return (f"{where} was trained with lora.r={r_file}, this run has lora.r={r_model}: add lora.r={r_file} "
                f"({fresh}).")
    return found.sentence(where, f"this run's model ({own['plugin']}, preset {own['preset']})",
                          f"pass a checkpoint of this model and adapter ({fresh})")


def module_weights(module: Any) -> tuple[dict[str, Any], set[str] | None]:
    """What :func:`state_problem` compares against: the module's state dict, and its trainable names when its
    checkpoints hold only those (an adapter run)."""
    trainable = {n for n, p in module.named_parameters() if p.requires_grad} if module.adapter_only else None
    return module.state_dict(), trainable


def check(checkpoint: Mapping[str, Any], cfg: Any, path: Path | str, module: Any = None) -> None:
    """Raise :class:`CheckpointMismatch` (one sentence) when ``checkpoint`` is not of the run ``cfg`` describes.

    With identity metadata the config decides; without it, when ``module`` (a TrainModule) is given, the names and
    shapes of the checkpoint's ``state_dict`` are compared with the module's."""
    where, fresh = source(cfg, path)
    meta = checkpoint.get("audiotrain")
    saved = meta.get(KEY) if isinstance(meta, Mapping) else None
    if saved:
        problem = identity_problem(saved, cfg, where, fresh)
    elif module is not None and isinstance(checkpoint.get("state_dict"), Mapping):
        problem = state_problem(checkpoint["state_dict"], *module_weights(module), cfg, where, fresh)
    else:
        problem = None
    if problem:
        raise CheckpointMismatch(problem)
