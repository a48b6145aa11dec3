"""``audiotrain export`` and ``audiotrain merge``: take a run's adapter out of the run directory, or take in an
adapter trained elsewhere (:mod:`audiotrain.cli.adapter_input`: a PEFT folder, ACE-Step's
``pytorch_lora_weights.safetensors``, VALL-E's ``lora.sft``; ``model=NAME`` when the file does not say its model,
``--alpha`` for a file without a LoRA config). Export writes such an adapter in a run's adapter layout (``peft/``
+ ``<plugin>/<native file>``); merge folds it into the base weights the overrides name.

Both read the adapter as data before using it (:func:`audiotrain.lora.adapter.load_peft`, the plugin's native
file, a full fine-tune's ``model.safetensors``): a run directory without adapters, a damaged or truncated file, or
an adapter of another model is one sentence and exit code 2, never a traceback. ``--trust-pickle`` is the
DANGEROUS opt-in ``trust_pickle=true`` (pickled ``.pth``/``.pt``/``.bin`` files unpickled fully, running any code
they carry) for files you made yourself.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from audiotrain.atomic_write import atomic_dir, recover
from audiotrain.errors import UserError

TRUST_HELP = ("DANGEROUS: unpickle .pth/.pt/.bin weights fully, which runs any code they carry; only for files you "
              "made yourself (default: read them as data, torch.load(weights_only=True))")


class NoAdapterError(FileNotFoundError):
    pass


def _adapter_dir(source: Path, step: str) -> Path:
    """A run directory (→ adapters/<step>) or an adapter folder given directly. A folder a killed save left
    renamed aside is put back first (``atomic_write.recover``); temporary folders are never picked."""
    if not source.exists():
        raise NoAdapterError(f"{source} holds no adapter '{step}' (no such folder): give a run directory (with "
                             f"adapters/{step}/) or an adapter folder.")
    if not source.is_dir():
        raise NoAdapterError(f"{source} holds no adapter '{step}' (it is a file, not a folder): give a run directory "
                             f"(with adapters/{step}/) or an adapter folder.")
    recover(source / "adapters" / step)
    if (source / "adapters" / step).is_dir():
        return source / "adapters" / step
    if (source / "peft").is_dir() or (source / "adapter_config.json").is_file() or (source / "model.safetensors").is_file():
        return source
    saved = sorted(p.name for p in (source / "adapters").glob("*") if p.is_dir()) if (source / "adapters").is_dir() else []
    hint = f" (it has {', '.join(saved)}: pass --step {saved[-1]})" if saved else ""
    raise NoAdapterError(f"{source} holds no adapter '{step}'{hint}: give a run directory (with adapters/{step}/) "
                         f"or an adapter folder.")


def _peft_dir(src: Path) -> Path | None:
    if (src / "peft").is_dir():
        return src / "peft"
    return src if (src / "adapter_config.json").is_file() else None


def _run_config(run_dir: Path) -> Any | None:
    """The run's config.yaml (None when the folder has none: an adapter folder given directly)."""
    from omegaconf import OmegaConf

    from audiotrain.errors import UserError

    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    try:
        cfg = OmegaConf.load(path)
    except Exception as exc:  # yaml's and OmegaConf's own error types
        raise UserError(f"{path} is not a readable run config ({str(exc).splitlines()[0][:120]}): give the run "
                        f"directory that trained the adapter.") from None
    name = OmegaConf.select(cfg, "model.name", default=None)
    if not name:
        raise UserError(f"{path} names no model (model.name): give the run directory that trained the adapter.")
    from audiotrain.plugins import registry

    if str(name) not in registry.discover():
        return cfg  # the caller says the plugin is not installed
    # a run from an older audiotrain lacks the settings added since: the plugin's defaults fill them, the run's
    # own values win
    from audiotrain.cli.adapter_input import compose_for

    return OmegaConf.merge(compose_for(str(name), None, [], "audiotrain"), cfg)


def check_adapter(src: Path, cfg: Any | None, trust_pickle: bool = False) -> list[Path]:
    """Read every weights file of an adapter folder as data (one sentence when one is bad); returns them."""
    from audiotrain.errors import UserError
    from audiotrain.lora import adapter as lora
    from audiotrain.safe_files import safetensors_metadata

    read: list[Path] = []
    peft = _peft_dir(src)
    if peft is not None:
        settings, _ = lora.load_peft(peft)
        if cfg is not None:
            problem = lora.base_problem(str(peft), lora.peft_base_model(peft), str(cfg.model.name),
                                        cfg.model.get("preset", ""))
            if problem:
                raise UserError(problem)
        read.append(peft / "adapter_model.safetensors")
    if (src / "model.safetensors").is_file():
        safetensors_metadata(src / "model.safetensors", expected="a full fine-tune's model.safetensors")
        read.append(src / "model.safetensors")
    if cfg is not None:
        from audiotrain.plugins import registry

        plugin = registry.get(str(cfg.model.name))
        fmt = plugin.native_adapter_format()
        native = src / plugin.name
        if fmt is not None and native.is_dir():
            for f in sorted(p for p in native.iterdir() if p.suffix in (".safetensors", ".sft", ".pth")):
                fmt.load(f, trust_pickle=trust_pickle)
                read.append(f)
    if not read:
        raise UserError(f"{src} holds no adapter weights (no peft/ folder, adapter_config.json or model.safetensors): "
                        f"give a run directory or an adapter folder.")
    return read


SOURCE_HELP = ("a run directory, one of its adapters/<step> folders, or an adapter trained elsewhere: a PEFT folder, "
               "ACE-Step's pytorch_lora_weights.safetensors (from its trainer too), a VALL-E lora.sft")
OVERRIDES_HELP = ("for an adapter trained elsewhere: model=NAME (when the file does not say it), model.preset=..., "
                  "and for merge the base weights, e.g. model.checkpoint_dir=DIR")
ALPHA_HELP = ("the LoRA alpha of a file that carries no LoRA config (default: alpha = r, scale 1, as ACE-Step's "
              "pipeline plays it); given for a file with a config it replaces the file's alpha")


def _source_parser(prog: str, description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description=description)
    ap.add_argument("run_dir", type=Path, metavar="SOURCE", help=SOURCE_HELP)
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)
    ap.add_argument("--step", default="final", help="final (default) or step_N, for a run directory")
    ap.add_argument("--alpha", type=float, default=None, help=ALPHA_HELP)
    ap.add_argument("--trust-pickle", action="store_true", help=TRUST_HELP)
    return ap


def _bad_overrides(overrides: list[str], command: str) -> str | None:
    bad = next((o for o in overrides if "=" not in o), None)
    if bad is not None:
        return (f"audiotrain {command}: {bad} is not KEY=VALUE: give the source first, then overrides such as "
                f"model=acestep model.preset=tiny.")
    return None


def _export_external(args: argparse.Namespace) -> int:
    """An adapter trained elsewhere → ``OUT/peft`` and ``OUT/<plugin>/<its native file>``, the layout of a run's
    adapter folder, so every audiotrain command and the original project read the result."""
    from audiotrain.cli.adapter_input import alpha_note, resolve
    from audiotrain.lora.adapter import save_peft_state

    try:
        adapter = resolve(args.run_dir, args.overrides, args.alpha, args.trust_pickle, "audiotrain export")
        out = args.out or Path(f"export_{args.run_dir.stem}")
        with atomic_dir(out, fix="free some space or give --out on another disk", option="--out") as tmp:
            save_peft_state(adapter.state, adapter.settings, tmp / "peft", adapter.base_model)
            fmt = adapter.plugin.native_adapter_format()
            if fmt is not None:
                fmt.save_state(adapter.state, adapter.settings, tmp / adapter.plugin.name)
    except (OSError, UserError) as exc:
        print(f"{exc}" if str(exc).startswith("audiotrain ") else f"audiotrain export: {exc}", file=sys.stderr)
        return 2
    note = alpha_note(adapter, args.alpha)
    if note:
        print(f"Note: {note}")
    for p in sorted(out.rglob("*")):
        if p.is_file():
            print(f"  {p}")
    s = adapter.settings
    print(f"Exported {adapter.path} ({adapter.base_model}, LoRA r={s.r} alpha={s.alpha:g}) to {out}")
    return 0


def export(argv: list[str]) -> int:
    from audiotrain.train.console import quiet_libraries

    quiet_libraries()  # bitsandbytes' and transformers' import chatter is not the user's business
    from audiotrain.cli.adapter_input import is_external

    ap = _source_parser("audiotrain export", "Copy a run's adapter in every saved format, or write an adapter "
                                             "trained elsewhere in every format (PEFT + the model's own).")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    problem = _bad_overrides(args.overrides, "export")
    if problem:
        print(problem, file=sys.stderr)
        return 2
    if is_external(args.run_dir):
        return _export_external(args)
    if args.overrides or args.alpha is not None:
        print(f"audiotrain export: {args.run_dir} is an audiotrain run, whose config says its model and LoRA: drop "
              f"{' '.join(args.overrides) or '--alpha'} (they are for an adapter trained elsewhere).", file=sys.stderr)
        return 2
    try:
        src = _adapter_dir(args.run_dir, args.step)
        check_adapter(src, _run_config(args.run_dir), args.trust_pickle)
    except (OSError, UserError) as exc:
        print(f"audiotrain export: {exc}", file=sys.stderr)
        return 2
    out = args.out or Path(f"export_{args.run_dir.name}_{args.step}")
    try:  # the copy appears complete or not at all; an earlier export of that name is replaced, never mixed in
        with atomic_dir(out, fix="free some space or give --out on another disk", option="--out") as tmp:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
    except UserError as exc:
        print(f"audiotrain export: {exc}", file=sys.stderr)
        return 2
    for p in sorted(out.rglob("*")):
        if p.is_file():
            print(f"  {p}")
    print(f"Exported the '{args.step}' adapter of {args.run_dir} to {out}")
    return 0


def _run_adapter(args: argparse.Namespace) -> tuple[Any, Any, Any, str]:
    """(config, settings, PEFT-keyed state, where) of a run directory's adapter, overrides merged into its config."""
    from omegaconf import OmegaConf

    from audiotrain.lora import adapter as lora

    src = _adapter_dir(args.run_dir, args.step)
    run_dir = args.run_dir.parent.parent if args.run_dir.parent.name == "adapters" else args.run_dir
    cfg = _run_config(run_dir)
    if cfg is None:
        raise UserError(f"{args.run_dir / 'config.yaml'} is missing: give the run directory that trained the "
                        f"adapter.")
    check_adapter(src, cfg, args.trust_pickle)
    peft = _peft_dir(src)
    if peft is None:
        raise UserError(f"{src} is a full fine-tune (model.safetensors), not a LoRA: it needs no merge; use "
                        f"`audiotrain export` to copy it.")
    model_keys = [o for o in args.overrides if o.partition("=")[0].lstrip("+~") in ("model", "model.name")]
    if model_keys:
        raise UserError(f"{args.run_dir} is a run of {cfg.model.name}: drop {model_keys[0]} (its config says the "
                        f"model; overrides may change where its weights are, e.g. model.checkpoint_dir=DIR).")
    OmegaConf.set_struct(cfg, False)
    if args.overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([o.lstrip("+") for o in args.overrides]))
    settings, state = lora.load_peft(peft)
    return cfg, settings, state, str(peft)


def merge(argv: list[str]) -> int:
    from audiotrain.train.console import quiet_libraries

    quiet_libraries()  # bitsandbytes' and transformers' import chatter is not the user's business
    ap = _source_parser("audiotrain merge", "Merge a LoRA into its base model and save the merged weights.")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    problem = _bad_overrides(args.overrides, "merge")
    if problem:
        print(problem, file=sys.stderr)
        return 2
    from omegaconf import OmegaConf

    from audiotrain.cli.adapter_input import alpha_note, is_external, resolve
    from audiotrain.config import resolvers
    from audiotrain.lora import adapter as lora
    from audiotrain.plugins import registry

    resolvers.register()
    note = None
    try:
        if is_external(args.run_dir):
            adapter = resolve(args.run_dir, args.overrides, args.alpha, args.trust_pickle, "audiotrain merge")
            cfg, settings, state, where = adapter.cfg, adapter.settings, adapter.state, str(adapter.path)
            note = alpha_note(adapter, args.alpha)
        else:
            cfg, settings, state, where = _run_adapter(args)
            if args.alpha is not None:
                settings.alpha = float(args.alpha)
        OmegaConf.set_struct(cfg, False)
        cfg.trust_pickle = bool(args.trust_pickle)  # never the run's own config.yaml: it may come from a stranger
        plugin = registry.get(cfg.model.name)
        problems = plugin.validate(cfg)
        if problems:
            raise UserError(problems[0])
        backbone = plugin.build_backbone(cfg)
        root = backbone.adapter_root()
        lora.attach(root, settings)
        lora.load_adapter_state(root, state, where, "give the adapter this base model was adapted with (its model "
                                                    "and model.preset)")
        lora.merge(root)
        with atomic_dir(args.out, fix="free some space or give --out on another disk", option="--out") as tmp:
            path = args.out / plugin.save_merged(backbone, cfg, tmp).relative_to(tmp)
    except (OSError, UserError) as exc:
        print(f"{exc}" if str(exc).startswith("audiotrain ") else f"audiotrain merge: {exc}", file=sys.stderr)
        return 2
    if note:
        print(f"Note: {note}")
    print(f"Merged LoRA r={settings.r} alpha={settings.alpha:g} (scale {settings.scale:.4g}) into {cfg.model.name}; "
          f"wrote {path}")
    return 0
